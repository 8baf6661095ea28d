"""A third-party MCP server over stdio that reports where it runs: ``python tests/support/stdio_upstream.py``.

For the dedicated tier's command upstreams: its parent process, resource limits, working
directory, home and environment show whose child it is; ``crash`` dies printing its
credential; ``credential`` echoes its configured credential (a careless server: the gateway
must redact it); ``nap`` records a cancellation in
a file of its working directory; ``linger`` makes it outlive the end of its stdin. Imports
nothing from ``tenantry``.
"""

from __future__ import annotations

import os
import resource
import sys
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
        "home": os.environ.get("HOME"),
        "tmpdir": os.environ.get("TMPDIR"),
    }


@server.tool()
async def env_holds(needle: str) -> bool:
    """Whether any environment variable's value contains ``needle``."""
    return any(needle in value for value in os.environ.values())


@server.tool()
def reach(paths: list[str]) -> dict[str, Any]:
    """What this process can reach: how reading each path ends, and how many processes it sees."""
    fates: dict[str, str] = {}
    for path in paths:
        try:
            if Path(path).is_dir():
                os.listdir(path)
            else:
                Path(path).read_bytes()
            fates[path] = "read"
        except FileNotFoundError:
            fates[path] = "missing"
        except PermissionError:
            fates[path] = "denied"
    processes = sum(1 for entry in os.listdir("/proc") if entry.isdigit())
    return {"fates": fates, "processes": processes, "pid": os.getpid()}


@server.tool()
def write(path: str, text: str) -> str:
    """Writes ``text`` to ``path``; says how it went."""
    try:
        Path(path).write_text(text)
    except OSError as exc:
        return f"refused: {exc.strerror}"
    return "written"


@server.tool()
async def crash() -> str:
    """Dies, having written its credential to stderr (as a careless server's fatal error might)."""
    sys.stderr.write(f"FATAL: cannot log in with {os.environ.get('UPSTREAM_KEY', 'nothing')}\n")
    sys.stderr.flush()
    os._exit(3)


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
