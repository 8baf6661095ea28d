"""Known hole (outside attack review), pinned as a strict xfail until it is fixed.

An upstream is listed through the session of the first tenant allowed to use it (docs/gateway.md),
and that one listing is what every tenant is shown. For a per-tenant upstream (a command upstream
rooted in ``{tenant_dir}``, or one with per-tenant credentials) the listing is that first tenant's
data: here ``acme``'s file names and contents, quoted in resource names and descriptions, are
served to ``globex`` in ``resources/list``. Reading such a URI as globex goes to globex's own
session (its own content), so the leak is the listing itself.

When listings become per tenant, the xfail turns into a failure ("XPASS(strict)"): drop the
marker then. The positive control beside it shows globex reads its own content.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.rpc import modern_call
from tests.support.server import RunningServer, start_server

NOTES = Path(__file__).resolve().parents[1] / "support" / "notes_upstream.py"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(tmp_path_factory.mktemp("listing") / "data")
    running.cli("upstream", "add", "notes", "--command", f"{sys.executable} {NOTES} {{tenant_dir}}")
    running.cli("tenant", "grant", "globex", "notes__count", "notes__README.md", "notes__reports_q3.txt")
    time.sleep(0.6)  # the server's next control-plane poll
    yield running
    running.stop()


def test_globex_reads_its_own_notes_through_the_upstream(server: RunningServer) -> None:
    globex = server.token("globex", "bob")
    read = modern_call(server.mcp_url, globex, "resources/read", {"uri": "upstream://notes/notes://README.md"})
    text = read.json()["result"]["contents"][0]["text"]
    assert "globex-canary" in text and "acme-canary" not in text


@pytest.mark.xfail(strict=True, reason="known hole: upstream listings come from the first tenant's session")
def test_another_tenants_upstream_listing_is_never_shown(server: RunningServer) -> None:
    globex = server.token("globex", "bob")
    listed = modern_call(server.mcp_url, globex, "resources/list", {})
    assert listed.status_code == 200
    assert "acme-canary" not in listed.text, listed.text
