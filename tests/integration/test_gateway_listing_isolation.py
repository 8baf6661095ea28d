"""Per-tenant command upstreams: two holes an outside attack review found, closed: what each tenant
is shown of their listings, and the storage quota that bounds what they write.

**Listings.**
A per-tenant upstream (a command upstream rooted in ``{tenant_dir}``, or one with per-tenant
credentials) lists that tenant's data: here each tenant's file names and lines, quoted in resource
names and descriptions. Each tenant is shown the listing made on its own session only; the
outside attack found every tenant shown the first tenant's (closed).

**Storage quota** (closed). An upstream rooted in ``{tenant_dir}`` writes in the tenant's file
root without going through ``ctx.files``. The gateway refuses the tenant's calls to it while the
tenant is at its quota and reconciles the quota ledger with the disk after each call, so once
its bytes pass ``file_bytes`` both the native writes and the upstream's next calls are refused
(``storage_quota_exceeded``), on the shared and the dedicated tier alike. The disk is shared with
every tenant and with the audit store, whose failure fails every tenant's calls closed.

Each property has a positive control beside it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.rpc import modern_call
from tests.support.server import RunningServer, start_server

NOTES = Path(__file__).resolve().parents[1] / "support" / "notes_upstream.py"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(tmp_path_factory.mktemp("listing") / "data", env={"TENANTRY_WORKER__PROCESSES": "60000"})
    running.cli("upstream", "add", "notes", "--command", f"{sys.executable} {NOTES} {{tenant_dir}}")
    running.cli("tenant", "grant", "globex", "notes__count", "notes__README.md", "notes__reports_q3.txt")
    running.cli("tenant", "grant", "acme", "notes__write", "notes__README.md")
    running.cli("tenant", "grant", "globex", "write_file")
    running.cli("tenant", "grant", "acme", "write_file")
    for tenant, tier in (("initech", "shared"), ("umbrella", "shared"), ("hooli", "dedicated")):
        running.cli("tenant", "create", tenant)
        running.cli("tenant", "grant", tenant, "notes__write", "write_file")
        if tier == "dedicated":
            running.cli("tenant", "move", tenant, "--tier", tier)
    time.sleep(0.6)  # the server's next control-plane poll
    yield running
    running.stop()


def test_globex_reads_its_own_notes_through_the_upstream(server: RunningServer) -> None:
    globex = server.token("globex", "bob")
    read = modern_call(server.mcp_url, globex, "resources/read", {"uri": "upstream://notes/notes://README.md"})
    text = read.json()["result"]["contents"][0]["text"]
    assert "globex-canary" in text and "acme-canary" not in text


def test_another_tenants_upstream_listing_is_never_shown(server: RunningServer) -> None:
    """globex is shown what the upstream lists on globex's own session (its file names and lines),
    never what it listed on acme's, although acme's session listed it first."""
    globex = server.token("globex", "bob")
    listed = modern_call(server.mcp_url, globex, "resources/list", {})
    assert listed.status_code == 200
    assert "acme-canary" not in listed.text, listed.text
    descriptions = [r.get("description", "") for r in listed.json()["result"]["resources"]]
    assert any("globex-canary" in d for d in descriptions), descriptions


def test_each_tenant_is_shown_its_own_listing_of_the_same_names(server: RunningServer) -> None:
    acme = server.token("acme", "alice")
    listed = modern_call(server.mcp_url, acme, "resources/list", {})
    assert listed.status_code == 200
    assert "globex-canary" not in listed.text, listed.text
    assert "acme-canary" in listed.text  # the same upstream, listed on acme's own session


def write_natively(server: RunningServer, token: str, path: str, text: str) -> dict[str, Any]:
    params = {"name": "write_file", "arguments": {"path": path, "content": text}}
    return dict(modern_call(server.mcp_url, token, "tools/call", params).json()["result"])


def write_through_the_upstream(server: RunningServer, token: str, name: str, size: int) -> dict[str, Any]:
    params = {"name": "notes__write", "arguments": {"name": name, "text": "y" * size}}
    return dict(modern_call(server.mcp_url, token, "tools/call", params).json()["result"])


def tool_error(result: dict[str, Any]) -> str | None:
    return result["_meta"]["io.tenantry/error"]["code"] if result.get("isError") else None


def files_root(server: RunningServer, tenant: str) -> Path:
    return server.data_dir / "tenants" / tenant / "files"


def notes_parent_pids(server: RunningServer, tenant: str) -> set[int]:
    """The parent pids of the notes upstream's processes running for ``tenant``."""
    root = str(files_root(server, tenant).resolve()).encode()
    parents = set()
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            if str(NOTES).encode() in cmdline and root in cmdline:
                parents.add(int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]))
        except (OSError, ValueError):
            continue
    return parents


def test_the_native_quota_refuses_writes_over_it(server: RunningServer) -> None:
    """The positive control: within ctx.files the quota holds."""
    server.cli("tenant", "limits", "globex", "file_bytes=20000")
    time.sleep(0.6)
    globex = server.token("globex", "writer")
    assert tool_error(write_natively(server, globex, "fits.txt", "x" * 1000)) is None
    refused = write_natively(server, globex, "too-big.txt", "x" * 30000)
    assert tool_error(refused) == "storage_quota_exceeded", refused


def test_bytes_an_upstream_writes_in_the_tenants_root_count_against_its_quota(server: RunningServer) -> None:
    server.cli("tenant", "limits", "acme", "file_bytes=20000")
    time.sleep(0.6)
    acme = server.token("acme", "writer")
    first = write_through_the_upstream(server, acme, "big0.txt", 20000)
    assert tool_error(first) is None, first  # there was room when it started; it ends over the quota
    after = write_natively(server, acme, "one-more.txt", "z" * 1000)
    assert tool_error(after) == "storage_quota_exceeded", after
    again = write_through_the_upstream(server, acme, "big1.txt", 20000)
    assert tool_error(again) == "storage_quota_exceeded", again
    assert "storage quota used up" in again["content"][0]["text"], again
    assert not (files_root(server, "acme") / "big1.txt").exists()  # the upstream was never called
    assert not (files_root(server, "acme") / "one-more.txt").exists()


def test_an_upstream_within_the_quota_leaves_room_for_native_writes(server: RunningServer) -> None:
    """The positive control: inside the quota both kinds of write go through, one after the other."""
    server.cli("tenant", "limits", "initech", "file_bytes=100000")
    time.sleep(0.6)
    initech = server.token("initech", "writer")
    assert tool_error(write_through_the_upstream(server, initech, "a.txt", 20000)) is None
    assert tool_error(write_natively(server, initech, "b.txt", "z" * 1000)) is None
    assert tool_error(write_through_the_upstream(server, initech, "c.txt", 20000)) is None
    assert tool_error(write_natively(server, initech, "d.txt", "z" * 50000)) is None
    assert (files_root(server, "initech") / "c.txt").stat().st_size == 20000


def test_a_native_write_that_fits_alone_is_refused_beside_an_upstreams_bytes(server: RunningServer) -> None:
    server.cli("tenant", "limits", "umbrella", "file_bytes=100000")
    time.sleep(0.6)
    umbrella = server.token("umbrella", "writer")
    assert tool_error(write_through_the_upstream(server, umbrella, "a.txt", 50000)) is None
    over = write_natively(server, umbrella, "b.txt", "z" * 60000)
    assert tool_error(over) == "storage_quota_exceeded", over
    assert tool_error(write_natively(server, umbrella, "c.txt", "z" * 40000)) is None  # what fits beside it


def test_a_dedicated_tenants_upstream_bytes_count_against_its_quota(server: RunningServer) -> None:
    server.cli("tenant", "limits", "hooli", "file_bytes=20000")
    time.sleep(0.6)
    hooli = server.token("hooli", "writer")
    first = write_through_the_upstream(server, hooli, "big0.txt", 20000)
    assert tool_error(first) is None, first
    parents = notes_parent_pids(server, "hooli")
    assert parents and server.process.pid not in parents, parents  # run by its worker, not the server
    after = write_natively(server, hooli, "one-more.txt", "z" * 1000)
    assert tool_error(after) == "storage_quota_exceeded", after
    again = write_through_the_upstream(server, hooli, "big1.txt", 20000)
    assert tool_error(again) == "storage_quota_exceeded", again
    assert not (files_root(server, "hooli") / "big1.txt").exists()
