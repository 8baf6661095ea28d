"""``tenant grant`` and ``tenant create --tools`` only grant what a server here serves.

Servers publish what they serve when they start (``serve`` and ``stdio``); the demo tools are
always known. Unknown names need ``--pending``; a tool registered for other tenants only is
refused even then.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from textwrap import dedent

import pytest

from tests.support.server import RunningServer, run_cli, start_server

NOTES_MODULE = dedent(
    """
    import tenantry

    app = tenantry.App("grant-notes")

    @app.tool()
    async def add_note(text: str) -> str:
        return text

    @app.tool(tenants=["globex"])
    async def globex_notes() -> str:
        return "globex only"

    @app.prompt()
    async def note_prompt() -> str:
        return "write a note"
    """
)


def _start(root: Path) -> RunningServer:
    (root / "grant_notes.py").write_text(NOTES_MODULE)
    data_dir = root / "data"
    data_dir.mkdir(mode=0o700)  # no permission warning on stderr
    running = start_server(data_dir, cwd=root)
    running.cli("tenant", "create", "initech", "--tools", "whoami")
    return running


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A demo server, shared: each test uses tenants of its own."""
    running = _start(tmp_path_factory.mktemp("grants"))
    yield running
    running.stop()


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[RunningServer]:
    """A demo server of the test's own, whose catalogue the test may change."""
    running = _start(tmp_path)
    yield running
    running.stop()


def grants(server: RunningServer, tenant: str) -> list[str]:
    return json.loads(server.cli("tenant", "show", tenant, "--json").stdout)["grants"]


def grant_records(server: RunningServer, tenant: str) -> list[dict]:
    return [r for r in server.audit_records(tenant) if r["event_type"] in ("tenant_granted", "tenant_created")]


def test_granting_a_tool_no_server_serves_is_refused_and_changes_nothing(demo: RunningServer) -> None:
    demo.cli("tenant", "create", "soylent", "--tools", "whoami")
    before = grant_records(demo, "soylent")
    refused = demo.cli("tenant", "grant", "soylent", "read_file", "no_such_tool", check=False)
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr == (
        "error: no server here serves a tool named 'no_such_tool' (known: list_files, query_crm, read_file, "
        "search_docs, send_email, whoami, ... and 1 more); to grant a tool that will appear later, add --pending\n"
    )
    assert grants(demo, "soylent") == ["whoami"]
    assert grant_records(demo, "soylent") == before
    # Positive control: a served tool is granted.
    assert demo.cli("tenant", "grant", "soylent", "read_file").returncode == 0
    assert grants(demo, "soylent") == ["read_file", "whoami"]


def test_granting_another_tenants_private_tool_is_refused_even_as_pending(demo: RunningServer) -> None:
    for pending in ([], ["--pending"]):
        refused = demo.cli("tenant", "grant", "acme", "globex_forecast", *pending, check=False)
        assert refused.returncode == 1
        assert refused.stderr == "error: 'globex_forecast' is registered for other tenants only, not for 'acme'\n"
        created = demo.cli("tenant", "create", "umbrella", "--tools", "whoami,globex_forecast", *pending, check=False)
        assert created.returncode == 1 and "registered for other tenants only, not for 'umbrella'" in created.stderr
    assert "globex_forecast" not in grants(demo, "acme")
    assert demo.cli("tenant", "show", "umbrella", check=False).returncode == 1  # not created
    # Positive control: the tenant it is registered for may be granted it.
    demo.cli("tenant", "ungrant", "globex", "globex_forecast")
    assert demo.cli("tenant", "grant", "globex", "globex_forecast").returncode == 0
    assert "globex_forecast" in grants(demo, "globex")


def test_creating_a_tenant_with_an_unknown_tool_is_refused(demo: RunningServer) -> None:
    refused = demo.cli("tenant", "create", "hooli", "--tools", "whoami,typo_tool", check=False)
    assert refused.returncode == 1
    assert "no server here serves a tool named 'typo_tool'" in refused.stderr and "--pending" in refused.stderr
    assert demo.cli("tenant", "show", "hooli", check=False).returncode == 1
    assert demo.cli("tenant", "create", "hooli", "--tools", "whoami,query_crm").returncode == 0  # positive control


def test_pending_grants_a_tool_that_will_appear_and_show_marks_it(demo: RunningServer) -> None:
    granted = demo.cli("tenant", "grant", "initech", "later_tool", "query_crm", "--pending")
    assert "pending until a server serves them: later_tool" in granted.stdout
    shown = json.loads(demo.cli("tenant", "show", "initech", "--json").stdout)
    assert shown["grants"] == ["later_tool", "query_crm", "whoami"]
    assert shown["pending_grants"] == ["later_tool"]
    human = demo.cli("tenant", "show", "initech").stdout
    assert "pending" in human and "later_tool  (granted, but no server here serves" in human
    record = grant_records(demo, "initech")[-1]
    assert record["event_type"] == "tenant_granted"
    assert record["detail"] == {"tools": ["later_tool", "query_crm"], "pending": ["later_tool"]}
    created = demo.cli("tenant", "create", "vandelay", "--tools", "whoami,soon_tool", "--pending")
    assert "pending until a server serves them: soon_tool" in created.stdout
    assert grant_records(demo, "vandelay")[-1]["detail"]["pending"] == ["soon_tool"]


def test_a_server_started_with_an_app_makes_its_tools_grantable(fresh: RunningServer, tmp_path: Path) -> None:
    demo = fresh
    refused = demo.cli("tenant", "grant", "initech", "add_note", check=False)
    assert refused.returncode == 1 and "no server here serves a tool named 'add_note'" in refused.stderr
    demo.cli("tenant", "grant", "acme", "add_note", "--pending")
    assert json.loads(demo.cli("tenant", "show", "acme", "--json").stdout)["pending_grants"] == ["add_note"]
    demo.stop()
    app_server = start_server(demo.data_dir, demo=False, app="grant_notes:app", cwd=tmp_path)
    try:
        assert app_server.cli("tenant", "grant", "initech", "add_note", "note_prompt").returncode == 0
        assert json.loads(app_server.cli("tenant", "show", "acme", "--json").stdout)["pending_grants"] == []
        refused = app_server.cli("tenant", "grant", "initech", "globex_notes", check=False)
        assert refused.returncode == 1 and "'globex_notes' is registered for other tenants only" in refused.stderr
        assert app_server.cli("tenant", "grant", "globex", "globex_notes").returncode == 0
        # The demo tools stay grantable although this server does not serve them.
        assert app_server.cli("tenant", "grant", "initech", "query_crm").returncode == 0
    finally:
        app_server.stop()
    # What a server published stays known after it stops (the app may be restarted at any time).
    assert run_cli("tenant", "grant", "initech", "add_note", data_dir=demo.data_dir).returncode == 0


def test_stdio_publishes_what_it_serves(fresh: RunningServer, tmp_path: Path) -> None:
    demo = fresh
    assert demo.cli("tenant", "grant", "initech", "add_note", check=False).returncode == 1
    token = demo.token("initech", "agent")
    result = run_cli(
        "stdio", "--app", "grant_notes:app", "--token", token, data_dir=demo.data_dir, input="", check=False,
        env={"PYTHONPATH": str(tmp_path)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert demo.cli("tenant", "grant", "initech", "add_note").returncode == 0
