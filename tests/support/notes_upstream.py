"""A per-tenant notes server over stdio, for gateway tests: ``python -m tests.support.notes_upstream DIR``.

Rooted in the directory it is given (the gateway passes ``{tenant_dir}``), it lists each file
there as a resource whose description quotes the file's first and last lines, as many file
servers describe their files, and writes notes there (``write``), as file servers do. Imports
nothing from ``tenantry``.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.resources import FunctionResource


def reader(text: str) -> Callable[[], Awaitable[str]]:
    async def read() -> str:
        return text

    return read


def main() -> None:
    root = Path(sys.argv[1])
    server = MCPServer("notes")
    files = sorted(p for p in root.rglob("*") if p.is_file())

    @server.tool()
    async def count() -> int:
        """How many notes you have."""
        return len(files)

    @server.tool()
    def write(name: str, text: str) -> int:
        """Write a note; how many bytes were written."""
        if "/" in name or name.startswith("."):
            raise ValueError("plain names only")
        return (root / name).write_text(text)

    for path in files:
        relative = path.relative_to(root).as_posix()
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()] or [""]
        server.add_resource(
            FunctionResource(
                uri=f"notes://{relative}",
                name=re.sub(r"[^A-Za-z0-9_.-]", "_", relative),
                description=f"{lines[0]} | {lines[-1]}",
                fn=reader(path.read_text(errors="replace")),
            )
        )
    server.run("stdio")


if __name__ == "__main__":
    main()
