"""The dedicated tier on PostgreSQL: a worker's ``ctx.sql`` proves its tenant to the database like
the server does, so row-level security keeps tenants apart inside the worker too, and a move
between tiers keeps every row."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from textwrap import dedent

import pytest

from tests.integration.test_dedicated_tier import Caller, error_code, wait_for
from tests.support.server import RunningServer, run_cli, start_server
from tests.support.tenant_sql import TenantDatabase, tenant_database

pytestmark = pytest.mark.postgres

APP = dedent(
    """
    import os

    import tenantry

    app = tenantry.App("dedicated-pg")

    @app.tool()
    async def add_customer(ctx: tenantry.ToolContext, name: str) -> int:
        await ctx.sql.execute("INSERT INTO customers (name) VALUES (?)", name)
        return os.getpid()

    @app.tool()
    async def customers(ctx: tenantry.ToolContext) -> list[str]:
        return [row["name"] for row in await ctx.sql.fetch("SELECT name FROM customers ORDER BY name")]

    @app.tool()
    async def set_tenant(ctx: tenantry.ToolContext, tenant: str) -> list[str]:
        await ctx.sql.execute("SELECT set_config('tenantry.tenant_id', ?, false)", tenant)
        return [row["name"] for row in await ctx.sql.fetch("SELECT name FROM customers")]
    """
)
TOOLS = "add_customer,customers,set_tenant"


@pytest.fixture(scope="module")
def server(postgres_available: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("dedicated-pg")
    with tenant_database(root / "db") as db:
        run_cli("db", "migrate", "--owner-url", db.owner_url, "--demo", "--tools-role", db.tools_role,
                data_dir=db.data_dir)  # fmt: skip
        running = _start(root, db)
        try:
            yield running
        finally:
            running.stop()


def _start(root: Path, db: TenantDatabase) -> RunningServer:
    (root / "pg_tools.py").write_text(APP)
    data_dir = root / "data"
    (data_dir / "keys").mkdir(parents=True, mode=0o700)
    data_dir.chmod(0o700)
    (data_dir / "keys" / "sql-tenant.key").write_bytes(db.tenant_key)
    (data_dir / "keys" / "sql-tenant.key").chmod(0o600)
    running = start_server(data_dir, demo=False, app="pg_tools:app", cwd=root, env={"TENANTRY_SQL__URL": db.tools_url})
    running.cli("tenant", "create", "acme", "--tools", TOOLS, "--tier", "dedicated")
    running.cli("tenant", "create", "globex", "--tools", TOOLS)
    return running


def test_row_level_security_holds_inside_a_dedicated_worker(server: RunningServer) -> None:
    acme, globex = Caller(server, "acme"), Caller(server, "globex")
    assert wait_for(lambda: globex.value("add_customer", name="globex-canary-customer")) == server.process.pid
    assert wait_for(lambda: acme.value("add_customer", name="acme-customer")) != server.process.pid
    # Positive controls: each tenant sees its own row.
    assert "acme-customer" in acme.value("customers")
    assert "globex-canary-customer" in globex.value("customers")
    assert "globex-canary-customer" not in acme.value("customers")
    # A tool that claims another tenant through a session setting gets nothing of it.
    claimed = acme.call("set_tenant", tenant="globex")
    assert "globex-canary-customer" not in str(claimed)
    assert error_code(claimed) in (None, "query_failed", "scope_violation")


def test_moving_a_postgres_tenant_both_ways_keeps_its_rows(server: RunningServer) -> None:
    acme = Caller(server, "acme")
    wait_for(lambda: acme.value("add_customer", name="before-move"))
    server.cli("tenant", "move", "acme", "--tier", "logical")
    wait_for(lambda: acme.value("add_customer", name="on-logical") == server.process.pid)
    server.cli("tenant", "move", "acme", "--tier", "dedicated")
    deadline = time.monotonic() + 30
    while acme.value("add_customer", name="back-on-dedicated") == server.process.pid:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    names = acme.value("customers")
    assert {"before-move", "on-logical", "back-on-dedicated"} <= set(names)
