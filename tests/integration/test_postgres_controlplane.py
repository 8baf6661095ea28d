"""A server whose tenants and grants live in PostgreSQL obeys the CLI like the embedded one."""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
import pytest

from tests.support.rpc import modern_call
from tests.support.server import run_cli, start_server

pytestmark = pytest.mark.postgres


def test_server_on_a_postgres_control_plane(postgres_url: str, tmp_path: Path) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS tenantry CASCADE")
    env = {"TENANTRY_CONTROLPLANE__URL": postgres_url}
    data_dir = tmp_path / "data"
    run_cli("tenant", "create", "acme", "--tools", "whoami,query_crm", data_dir=data_dir, env=env)
    server = start_server(data_dir, demo=False, env=env)
    try:
        token = server.token("acme", "alice")
        visible = lambda: {  # noqa: E731
            t["name"] for t in modern_call(server.mcp_url, token, "tools/list", {}).json()["result"]["tools"]
        }
        assert visible() == set()  # granted, but no such tools registered without --demo
        server.stop()
        server = start_server(data_dir, demo=True, env=env)
        token = server.token("acme", "alice")
        assert visible() == {"whoami", "query_crm"}
        server.cli("tenant", "ungrant", "acme", "query_crm")
        deadline = time.monotonic() + 1.0
        while visible() != {"whoami"}:
            assert time.monotonic() < deadline, "grant change did not reach the server within 1 second"
            time.sleep(0.05)
        with psycopg.connect(postgres_url) as conn:
            tenants = conn.execute("SELECT id FROM tenantry.tenants ORDER BY id").fetchall()
        assert [t[0] for t in tenants] == ["acme", "globex"]  # the demo seed went to PostgreSQL too
    finally:
        server.stop()
