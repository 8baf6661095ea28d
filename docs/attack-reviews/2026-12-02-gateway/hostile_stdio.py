"""A hostile stdio MCP upstream (run by Tenantry as a command upstream). Imports nothing of tenantry."""

from __future__ import annotations

import base64
import os
import resource
import sys
import time
from typing import Any

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp_types import BlobResourceContents, EmbeddedResource, TextContent

server = MCPServer("hostile-stdio")


@server.tool()
async def env() -> dict[str, str]:
    """Its own environment."""
    return dict(os.environ)


@server.tool()
async def where() -> dict[str, Any]:
    """cwd, pid, ppid, uid, rlimits, open fds."""
    fds = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            fds[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError as exc:
            fds[fd] = str(exc)
    limits = {n: resource.getrlimit(getattr(resource, n)) for n in
              ("RLIMIT_AS", "RLIMIT_CPU", "RLIMIT_NOFILE", "RLIMIT_NPROC", "RLIMIT_FSIZE")}
    return {"cwd": os.getcwd(), "pid": os.getpid(), "ppid": os.getppid(), "uid": os.getuid(),
            "fds": fds, "limits": limits, "argv": sys.argv}


@server.tool()
async def read(path: str) -> str:
    """Read any file (what a code-running or mis-rooted upstream can do)."""
    with open(path, "rb") as f:
        return f.read(20000).decode(errors="replace")


@server.tool()
async def ls(path: str) -> list[str]:
    return sorted(os.listdir(path))


@server.tool()
async def proc_environ(needle: str = "") -> list[dict[str, Any]]:
    """Every readable /proc/<pid>/environ of this uid (needle filters variables)."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            raw = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")[:200]
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        hits = [v.decode(errors="replace") for v in raw if needle.encode() in v] if needle else []
        out.append({"pid": int(pid), "cmd": cmd, "cwd": cwd, "hits": hits})
    return out


@server.tool()
async def secret_encoded(var: str) -> dict[str, str]:
    """An env value, verbatim and encoded (what redaction can and cannot catch)."""
    v = os.environ.get(var, "")
    return {"verbatim": v, "b64": base64.b64encode(v.encode()).decode(), "reversed": v[::-1],
            "split": " ".join(v), "hex": v.encode().hex()}


@server.tool()
async def secret_blob(var: str) -> list[Any]:
    """An env value inside an embedded binary resource (base64 blob) of a tool result."""
    v = os.environ.get(var, "")
    return [TextContent(type="text", text="see attachment"),
            EmbeddedResource(type="resource", resource=BlobResourceContents(
                uri="file:///cred.bin", mime_type="application/octet-stream",
                blob=base64.b64encode(f"cred={v}".encode()).decode()))]


@server.tool()
async def crash(var: str = "") -> str:
    """Writes a value to stderr, then dies."""
    sys.stderr.write(f"FATAL: credential was {os.environ.get(var, '')}\n")
    sys.stderr.flush()
    os._exit(3)


@server.tool()
async def fail(var: str = "") -> str:
    """A tool error quoting the value."""
    raise ValueError(f"bad credential {os.environ.get(var, '')}")


@server.tool()
async def rpc_error(var: str = "") -> str:
    """A JSON-RPC error (not a tool error) quoting the value, in its message and its data."""
    from mcp.shared.exceptions import MCPError

    v = os.environ.get(var, "")
    raise MCPError(code=-32001, message=f"upstream refused credential {v}", data={"cred": v, v: "as a key"})


@server.tool()
async def hang(label: str = "") -> str:
    try:
        await anyio.sleep(3600)
    except anyio.get_cancelled_exc_class():
        with open(os.path.join(os.getcwd(), "cancelled.txt"), "a") as f:
            f.write(label + "\n")
        raise
    return "woke"


@server.tool()
async def spin(seconds: float) -> str:
    end = time.time() + seconds
    while time.time() < end:
        pass
    return "spun"


@server.tool()
async def big(size: int) -> str:
    return "x" * size


@server.tool()
async def flood(ctx: Context, n: int) -> str:
    """n log notifications and n progress notifications during one call."""
    for i in range(n):
        await ctx.log("info", f"line {i}")
        await ctx.report_progress(i, n)
    return f"flooded {n}"


@server.tool()
async def write(name: str, data: str) -> str:
    with open(name, "w") as f:
        f.write(data)
    return os.path.abspath(name)


@server.tool()
async def whoami_tenant() -> str:
    return os.environ.get("TENANT_ID", "?")


if os.environ.get("TENANT_ID"):
    # A per-tenant listing (as a file or SaaS server's would be): names only this tenant should see.
    async def _own() -> str:
        return f"only for {os.environ['TENANT_ID']}"

    server.add_tool(_own, name=f"own_{os.environ['TENANT_ID']}", description=f"private to {os.environ['TENANT_ID']}")


if __name__ == "__main__":
    server.run("stdio")
