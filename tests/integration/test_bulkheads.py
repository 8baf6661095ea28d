"""Bulkheads over real HTTP: one tenant flooding the server with endless SQL takes only its own
threads. Another tenant's SQL is served promptly, the control-plane poll keeps running (a halt
reaches the server within a second), and the endless statements stop at the time limit."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from textwrap import dedent

import pytest

from tests.support.rpc import modern_call
from tests.support.server import RunningServer, start_server

SQL_APP = dedent(
    '''
    import tenantry

    app = tenantry.App("sql-load")

    @app.tool()
    async def spin(ctx: tenantry.ToolContext) -> int:
        """Count for ever (until the statement time limit)."""
        row = await ctx.sql.fetchone(
            "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n+1 FROM r) SELECT count(*) AS c FROM r"
        )
        return row["c"]

    @app.tool()
    async def ping(ctx: tenantry.ToolContext) -> int:
        """One trivial statement."""
        return (await ctx.sql.fetchone("SELECT 1 AS one"))["one"]
    '''
)
STATEMENT_LIMIT = 6
FLOOD = 48  # more than anyio's whole default pool of 40 threads


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("bulkheads")
    (root / "sql_load.py").write_text(SQL_APP)
    config = root / "tenantry.toml"
    config.write_text(f'[limits]\nsql_statement_timeout = "{STATEMENT_LIMIT}s"\n')
    running = start_server(root / "data", demo=False, app="sql_load:app", config=config, cwd=root)
    for tenant in ("acme", "globex"):
        running.cli("tenant", "create", tenant, "--tools", "spin,ping")
    yield running
    running.stop()


def call(server: RunningServer, token: str, tool: str) -> tuple[float, int, str]:
    started = time.monotonic()
    response = modern_call(server.mcp_url, token, "tools/call", {"name": tool, "arguments": {}})
    return time.monotonic() - started, response.status_code, response.text


def test_a_tenant_flooding_slow_sql_spares_other_tenants_and_the_control_plane(server: RunningServer) -> None:
    acme, globex = server.token("acme", "flood"), server.token("globex", "quiet")
    assert '"structuredContent":{"result":1}' in call(server, globex, "ping")[2].replace(" ", "")  # warm
    flood_results: list[tuple[float, int, str]] = []
    flooders = [
        threading.Thread(target=lambda: flood_results.append(call(server, acme, "spin")), daemon=True)
        for _ in range(FLOOD)
    ]
    for thread in flooders:
        thread.start()
    time.sleep(1.0)  # every flood call has reached the server

    quiet = [call(server, globex, "ping") for _ in range(10)]
    assert all(status == 200 and '"isError":true' not in text.replace(" ", "") for _, status, text in quiet)
    # Waiting behind acme would take seconds (its statements run to the 6 s limit); a loaded
    # machine (CI) makes a call in a while take a few hundred ms.
    assert max(elapsed for elapsed, _, _ in quiet) < 2.5, f"globex waited behind acme: {quiet}"

    server.cli("tenant", "halt", "acme", "--reason", "flooding")
    halted_at = time.monotonic()
    while True:
        _elapsed, status, text = call(server, acme, "ping")
        if status == 403:
            break
        assert time.monotonic() - halted_at < 1.0, "the halt did not reach the server within a second"
    assert '"code":"tenant_halted"' in text.replace(" ", "")
    assert time.monotonic() - halted_at < 1.0

    for thread in flooders:
        thread.join(STATEMENT_LIMIT + 10)
    assert len(flood_results) == FLOOD  # every endless statement ended (time limit, or the halt)
    assert all('"result"' not in text or '"isError":true' in text.replace(" ", "") for _, _, text in flood_results)
    # globex is still served normally afterwards.
    assert call(server, globex, "ping")[1] == 200
