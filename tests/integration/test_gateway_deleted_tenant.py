"""A tenant made under the id of a deleted one starts from nothing, upstreams included: the
per-tenant upstream process the deleted tenant's requests started (its credentials, its
directory, what it read of the tenant's files) is not the one the new tenant is served by."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.rpc import modern_call
from tests.support.server import RunningServer, start_server

NOTES = Path(__file__).resolve().parents[1] / "support" / "notes_upstream.py"
URI = "upstream://notes/notes://merger-plan.txt"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    data = tmp_path_factory.mktemp("deleted") / "data"
    running = start_server(data)
    (data / "tenants" / "acme" / "files" / "merger-plan.txt").write_text("acme-secret-merger\nwith initech\n")
    running.cli("upstream", "add", "notes", "--command", f"{sys.executable} {NOTES} {{tenant_dir}}")
    running.cli("tenant", "grant", "acme", "notes__count", "notes__merger-plan.txt")
    time.sleep(0.6)
    yield running
    running.stop()


def test_a_tenant_made_under_a_deleted_ones_id_is_not_served_its_upstream_process(server: RunningServer) -> None:
    old = server.token("acme", "a")
    listed = modern_call(server.mcp_url, old, "resources/list", {})
    assert "acme-secret-merger" in listed.text, listed.text  # the positive control: the old acme's own
    read = modern_call(server.mcp_url, old, "resources/read", {"uri": URI})
    assert "acme-secret-merger" in read.text, read.text
    server.cli("tenant", "delete", "acme", "--yes")
    time.sleep(1.0)
    server.cli("tenant", "create", "acme", "--tools", "notes__count,notes__merger-plan.txt", "--pending")
    time.sleep(1.0)
    new = server.token("acme", "newcomer")
    listed = modern_call(server.mcp_url, new, "resources/list", {})
    assert listed.status_code == 200, listed.text
    assert "merger" not in listed.text and "acme-secret" not in listed.text, listed.text
    read = modern_call(server.mcp_url, new, "resources/read", {"uri": URI})
    assert "acme-secret" not in read.text, read.text
    counted = modern_call(server.mcp_url, new, "tools/call", {"name": "notes__count", "arguments": {}})
    assert counted.json()["result"]["structuredContent"]["result"] == 0, counted.text  # its own, empty root
