"""Framework mode: ``tenantry serve --app module:object`` serves the author's own tools."""

from __future__ import annotations

import time
from pathlib import Path
from textwrap import dedent

import anyio
import pytest
from mcp.shared.exceptions import MCPError

from tests.support.mcp_clients import mcp_client
from tests.support.server import run_cli, start_server

pytestmark = pytest.mark.anyio

USER_MODULE = dedent(
    '''
    import tenantry

    app = tenantry.App("notes")

    @app.tool()
    async def add_note(ctx: tenantry.ToolContext, text: str) -> dict:
        """Store a note for your organisation."""
        await ctx.sql.execute("CREATE TABLE IF NOT EXISTS notes (text TEXT)")
        await ctx.sql.execute("INSERT INTO notes VALUES (?)", text)
        return {"tenant": ctx.tenant_id, "count": (await ctx.sql.fetchone("SELECT COUNT(*) AS n FROM notes"))["n"]}

    @app.tool()
    async def count_notes(ctx: tenantry.ToolContext) -> int:
        return (await ctx.sql.fetchone("SELECT COUNT(*) AS n FROM notes"))["n"]

    @app.tool(tenants=["globex"])
    async def globex_only(ctx: tenantry.ToolContext) -> str:
        return "globex secret"
    '''
)


async def test_user_app_tools_are_served_per_tenant(tmp_path: Path) -> None:
    (tmp_path / "my_notes.py").write_text(USER_MODULE)
    data_dir = tmp_path / "data"
    server = start_server(data_dir, demo=False, app="my_notes:app", cwd=tmp_path)
    try:
        server.cli("tenant", "create", "acme", "--tools", "add_note")
        server.cli("tenant", "create", "globex", "--tools", "add_note,globex_only")
        # The CLI refuses to grant acme globex's tool; a grant that slipped in anyway (made before
        # the tool was restricted, or written to the store directly) must still not expose it.
        refused = server.cli("tenant", "grant", "acme", "globex_only", check=False)
        assert refused.returncode == 1 and "registered for other tenants only" in refused.stderr
        _grant_behind_the_clis_back(data_dir, "acme", ["globex_only", "count_notes"])
        acme = server.token("acme", "a")
        globex = server.token("globex", "g")
        async with mcp_client(server.mcp_url, acme) as client:
            deadline = time.monotonic() + 5
            while "count_notes" not in (names := [t.name for t in (await client.list_tools()).tools]):
                assert time.monotonic() < deadline, "the server did not pick up acme's new grants"
                await anyio.sleep(0.05)
            assert names == ["add_note", "count_notes"]  # granted, but registered for globex only
            first = await client.call_tool("add_note", {"text": "acme-canary note"})
            assert first.structured_content == {"tenant": "acme", "count": 1}
            with pytest.raises(MCPError):
                await client.call_tool("globex_only", {})
        async with mcp_client(server.mcp_url, globex) as client:
            assert sorted(t.name for t in (await client.list_tools()).tools) == ["add_note", "globex_only"]
            result = await client.call_tool("add_note", {"text": "globex note"})
            assert result.structured_content == {"tenant": "globex", "count": 1}  # acme's note is not visible
    finally:
        server.stop()


def _grant_behind_the_clis_back(data_dir: Path, tenant: str, tools: list[str]) -> None:
    from tenantry.controlplane.factory import open_tenant_store

    store = open_tenant_store(None, data_dir)
    try:
        store.grant(tenant, tools)  # one write: the server sees both grants at once
    finally:
        store.close()


def test_bad_app_spec_is_a_usage_error(tmp_path: Path) -> None:
    for spec, message in (
        ("nonexistent_mod:app", "cannot import"),
        ("os:path", "not a tenantry.App"),
        ("noattr", "module:object"),
    ):
        result = run_cli("serve", "--app", spec, "--port", "1", data_dir=tmp_path / "d", check=False)
        assert result.returncode == 2, result.stderr
        assert message in result.stderr
