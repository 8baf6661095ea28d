"""A third-party MCP server over stdio that reports where it runs: ``python tests/support/stdio_upstream.py``.

For the dedicated tier's command upstreams: its parent process, resource limits, working
directory and environment show whose child it is; ``credential`` echoes its configured
credential (a careless server: the gateway must redact it); ``nap`` records a cancellation in
a file of its working directory; ``linger`` makes it outlive the end of its stdin. Imports
nothing from ``tenantry``.
"""

from __future__ import annotations

import os
import resource
import threading
import time
from pathlib import Path
from typing import Any

import anyio
from mcp.server.mcpserver import MCPServer

server = MCPServer("stdio-upstream-under-test")
CANCELLED = Path("cancelled.txt")
NAPPING = Path("napping.txt")


@server.tool()
async def whereami() -> dict[str, Any]:
    """The process this server runs in."""
    return {
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "cwd": os.getcwd(),
        "env": sorted(os.environ),
        "nofile": list(resource.getrlimit(resource.RLIMIT_NOFILE)),
        "address_space": list(resource.getrlimit(resource.RLIMIT_AS)),
        "file_size": list(resource.getrlimit(resource.RLIMIT_FSIZE)),
    }


@server.tool()
async def env_holds(needle: str) -> bool:
    """Whether any environment variable's value contains ``needle``."""
    return any(needle in value for value in os.environ.values())


@server.tool()
async def credential() -> str:
    """Echoes its own credential back (a careless server)."""
    return f"my key is {os.environ.get('UPSTREAM_KEY', 'nothing')}"


@server.tool()
async def nap(seconds: float, label: str = "") -> str:
    """Sleep; if cancelled, remember the label (in ``cancelled.txt`` of the working directory).
    ``napping`` then says which process began which nap last."""
    _note_nap(label)
    try:
        await anyio.sleep(seconds)
    except anyio.get_cancelled_exc_class():
        _remember(label)
        raise
    return "rested"


@server.tool()
async def big(size: int) -> str:
    """A result of ``size`` characters."""
    return "x" * size


@server.tool()
async def linger() -> int:
    """From now on, outlive the end of stdin for a while (a server that ignores it); returns its pid."""
    threading.Thread(target=time.sleep, args=(120,), daemon=False).start()
    return os.getpid()


def _note_nap(label: str) -> None:
    NAPPING.write_text(f"{os.getpid()} {label}")


def _remember(label: str) -> None:
    with CANCELLED.open("a") as out:
        out.write(label + "\n")


@server.tool()
def napping() -> str:
    """``"<pid> <label>"`` of the last nap begun by a process of this directory ("" if none)."""
    return NAPPING.read_text() if NAPPING.exists() else ""


@server.tool()
def cancellations() -> list[str]:
    """The labels of the naps that were cancelled (by any process run in this directory)."""
    return CANCELLED.read_text().split() if CANCELLED.exists() else []


if __name__ == "__main__":
    server.run("stdio")
