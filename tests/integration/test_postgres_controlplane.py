"""A server whose tenants and grants live in PostgreSQL obeys the CLI like the embedded one."""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
import pytest

from tenantry.auth.apikeys import generate_api_key
from tenantry.controlplane.factory import open_tenant_store
from tenantry.core.credentials import Revocation
from tests.integration.conftest import DatabaseRoles
from tests.support.rpc import modern_call
from tests.support.server import run_cli, start_server

pytestmark = pytest.mark.postgres


def test_server_on_a_postgres_control_plane(postgres_url: str, tmp_path: Path) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS tenantry CASCADE")
    env = {"TENANTRY_CONTROLPLANE__URL": postgres_url}
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700)  # the control plane is in PostgreSQL; keys live in the data dir
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


def test_the_application_role_runs_the_control_plane_after_db_init(db_roles: DatabaseRoles, tmp_path: Path) -> None:
    """``db init`` grants the application role what the control plane needs, new tables included."""
    store = open_tenant_store(db_roles.app_url, tmp_path)
    try:
        store.create_tenant("acme", tools=["whoami"])
        store.add_revocation(Revocation("tenant", "acme", 1, 2**40, cutoff=1, actor="test"))
        store.add_api_key(generate_api_key("acme", ["whoami"]).record)
        assert len(store.list_revocations(0)) == 1 and len(store.list_api_keys("acme")) == 1
        assert store.prune_revocations(2**41) == 1
    finally:
        store.close()


def test_revocation_and_halt_reach_a_server_on_postgres(postgres_url: str, tmp_path: Path) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS tenantry CASCADE")
    env = {"TENANTRY_CONTROLPLANE__URL": postgres_url}
    server = start_server(tmp_path / "data", env=env)
    try:
        whoami = {"name": "whoami", "arguments": {}}
        alice, bob = server.token("acme", "alice"), server.token("acme", "bob")
        key = server.cli("apikey", "create", "--tenant", "acme", "--tools", "whoami").stdout.strip()
        for credential in (alice, bob, key):
            assert modern_call(server.mcp_url, credential, "tools/call", whoami).status_code == 200
        server.cli("token", "revoke", "--tenant", "acme", "--sub", "alice")
        server.cli("apikey", "revoke", key.split("_")[2])
        deadline = time.monotonic() + 1.0
        while {modern_call(server.mcp_url, c, "tools/call", whoami).status_code for c in (alice, key)} != {401}:
            assert time.monotonic() < deadline, "revocations did not reach the server within 1 second"
            time.sleep(0.05)
        assert modern_call(server.mcp_url, bob, "tools/call", whoami).status_code == 200
        server.cli("tenant", "halt", "acme", "--reason", "drill")
        deadline = time.monotonic() + 1.0
        while modern_call(server.mcp_url, bob, "tools/call", whoami).status_code != 403:
            assert time.monotonic() < deadline, "the halt did not reach the server within 1 second"
            time.sleep(0.05)
    finally:
        server.stop()
