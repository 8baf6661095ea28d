"""A command upstream runs in a sandbox of its own (Linux namespaces), on both tiers: it sees no
other process (another tenant's upstream, a dedicated worker, the server: their environments
hold credentials) and of the data dir only its own working directory and its tenant's files
(not the keys, the stores, nor another tenant's directory); its ``/tmp`` is its own."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_dedicated_tier import wait_for
from tests.support.rpc import modern_call
from tests.support.server import RunningServer, start_server

SCRIPT = Path(__file__).parent.parent / "support" / "stdio_upstream.py"
TOOLS = ["probe__reach", "probe__write", "probe__whereami"]
TIERS = {"acme": "logical", "globex": "dedicated"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(
        tmp_path_factory.mktemp("upstream-sandbox") / "data", env={"TENANTRY_GATEWAY__COMMAND_SANDBOX": "required"}
    )
    running.cli("upstream", "add", "probe", "--command", f"{sys.executable} {SCRIPT}")
    for tenant in TIERS:
        running.cli("tenant", "grant", tenant, *TOOLS)
    running.cli("tenant", "move", "globex", "--tier", "dedicated")
    for tenant in TIERS:
        wait_for(lambda t=tenant: "result" in probe(running, t, "probe__whereami"))
    yield running
    running.stop()


def probe(server: RunningServer, tenant: str, name: str, /, **arguments: Any) -> dict[str, Any]:
    response = modern_call(
        server.mcp_url, server.token(tenant, f"{tenant}-agent"), "tools/call", {"name": name, "arguments": arguments}
    )
    body: dict[str, Any] = response.json()
    return body


def value(server: RunningServer, tenant: str, name: str, /, **arguments: Any) -> Any:
    result = probe(server, tenant, name, **arguments)["result"]
    assert not result.get("isError"), result
    structured = result["structuredContent"]
    return structured.get("result", structured)


@pytest.mark.parametrize("tenant", list(TIERS), ids=list(TIERS.values()))
def test_a_command_upstream_reaches_only_its_own_directories(server: RunningServer, tenant: str) -> None:
    other = next(t for t in TIERS if t != tenant)
    tenants = server.data_dir.resolve() / "tenants"
    secret_paths = [
        *[str(p) for p in (server.data_dir.resolve() / "keys").iterdir()],
        str(server.data_dir.resolve() / "control.sqlite3"),
        str(server.data_dir.resolve() / "audit.sqlite3"),
        str(tenants / other),
        str(tenants / "globex" / "worker"),  # the dedicated worker's own directory
    ]
    own_paths = [str(tenants / tenant / "upstreams" / "probe"), str(tenants / tenant / "files")]
    # Positive control: all of them exist and this test (the server's user) can read them.
    for path in secret_paths + own_paths:
        assert Path(path).exists(), path
    reached = value(server, tenant, "probe__reach", paths=secret_paths + own_paths)
    assert {p: reached["fates"][p] for p in secret_paths} == dict.fromkeys(secret_paths, "missing")
    assert {p: reached["fates"][p] for p in own_paths} == dict.fromkeys(own_paths, "read")
    # It sees its own processes only: not the server, its worker or another tenant's upstream.
    assert reached["pid"] == 1 and reached["processes"] <= 3, reached


@pytest.mark.parametrize("tenant", list(TIERS), ids=list(TIERS.values()))
def test_a_command_upstream_cannot_write_outside_its_directories(server: RunningServer, tenant: str) -> None:
    data = server.data_dir.resolve()
    assert value(server, tenant, "probe__write", path=str(data / "planted.txt"), text="x").startswith("refused")
    assert not (data / "planted.txt").exists()
    own = data / "tenants" / tenant / "upstreams" / "probe" / f"{tenant}.txt"
    assert value(server, tenant, "probe__write", path=str(own), text="mine") == "written"
    assert own.read_text() == "mine"


def test_each_upstreams_tmp_is_its_own(server: RunningServer) -> None:
    name = f"left-by-acme-{uuid.uuid4().hex}.txt"
    assert value(server, "acme", "probe__write", path=f"/tmp/{name}", text="acme was here") == "written"
    reached = value(server, "globex", "probe__reach", paths=[f"/tmp/{name}"])
    assert reached["fates"][f"/tmp/{name}"] == "missing"
    # Positive control: it is in acme's own temporary directory, counted with its files.
    kept = server.data_dir / "tenants" / "acme" / "upstreams" / "probe" / ".tmp" / name
    assert kept.read_text() == "acme was here"
    assert not (Path("/tmp") / name).exists()
