"""The demo on PostgreSQL (RLS) + S3 (moto server) + Qdrant local, configured in TOML: a tenant
that used every store over HTTP is exported whole and deleted through the CLI; afterwards no
PostgreSQL table, bucket key, vector payload or file under the data dir holds anything of it,
while the other tenant's data and audit stream are untouched."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.leftovers import (
    bucket_containing,
    files_containing,
    pg_tables_containing,
    qdrant_payloads_containing,
)
from tests.support.rpc import LegacySession
from tests.support.s3 import MotoServer
from tests.support.server import RunningServer, run_cli, start_server
from tests.support.tenant_sql import TenantDatabase, tenant_database, write_scaled_config

pytestmark = pytest.mark.postgres


@pytest.fixture
def scaled(
    postgres_available: None, s3_server: MotoServer, tmp_path: Path
) -> Iterator[tuple[RunningServer, TenantDatabase, str, Path]]:
    data_dir = tmp_path / "data"
    with tenant_database(data_dir) as db:
        run_cli("db", "migrate", "--owner-url", db.owner_url, "--demo", "--tools-role", db.tools_role,
                data_dir=data_dir)  # fmt: skip
        bucket = s3_server.create_bucket()
        config = write_scaled_config(tmp_path / "tenantry.toml", db, bucket, s3_server.endpoint_url)
        server = start_server(data_dir, config=config)
        try:
            yield server, db, bucket, config
        finally:
            server.stop()
            s3_server.delete_bucket(bucket)


def _call(session: LegacySession, tool: str, **arguments: object) -> str:
    response = session.call("tools/call", {"name": tool, "arguments": arguments})
    assert response.status_code == 200 and '"isError":true' not in response.text, response.text
    return response.text


def test_export_then_delete_on_postgres_s3_and_qdrant_leaves_nothing(
    scaled: tuple[RunningServer, TenantDatabase, str, Path], s3_server: MotoServer, tmp_path: Path
) -> None:
    server, db, bucket, config = scaled
    canary = f"acme-canary-{secrets.token_hex(6)}"
    acme = LegacySession(server.mcp_url, server.token("acme", "alice"))
    _call(acme, "write_file", path=f"notes/{canary}.txt", content=f"note {canary}")
    _call(acme, "send_email", to="x@y.example", subject="s", body=f"mail {canary}")
    assert "acme-canary" in _call(acme, "search_docs", query="pricing")
    server.stop()  # Qdrant's local mode admits one process: the CLI works on the store alone

    def cli(*args: str, check: bool = True) -> str:
        result = run_cli(*args, "--config", str(config), data_dir=server.data_dir, check=check)
        return result.stdout

    bundle = tmp_path / "acme-export"
    cli("tenant", "export", "acme", "--out", str(bundle))
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert {"sql:postgresql", "files:s3", "vectors:qdrant", "controlplane:sqlite"} <= set(manifest["stores"])
    held = b"".join(p.read_bytes() for p in bundle.rglob("*") if p.is_file())
    assert held.count(canary.encode()) >= 3 and b"acme-canary Carol" in held and b"Marker: acme-canary" in held
    assert b"globex" not in held
    assert cli("audit", "verify", "--file", str(bundle / "audit" / "stream.jsonl")).startswith("acme: ok")

    qdrant = server.data_dir / "vectors" / "qdrant"
    for needle in ("acme-canary", canary):  # positive controls: every scanner sees the tenant first
        assert pg_tables_containing(db.admin_url, needle)
        assert bucket_containing(s3_server.client(), bucket, needle)
    assert qdrant_payloads_containing(qdrant, "tenantry", "acme-canary")

    assert "deleted tenant acme" in cli("tenant", "delete", "acme", "--yes")
    for needle in ("acme-canary", canary):
        assert pg_tables_containing(db.admin_url, needle) == []
        assert bucket_containing(s3_server.client(), bucket, needle) == []
        assert qdrant_payloads_containing(qdrant, "tenantry", needle) == 0
        assert files_containing(server.data_dir, needle) == []
    keys = [o["Key"] for o in s3_server.client().list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert not [k for k in keys if k.startswith("tenants/acme/")]

    # The other tenant, untouched in every store; its audit stream and acme's retained one verify.
    assert pg_tables_containing(db.admin_url, "globex-canary") == ["tenant_data.customers", "tenant_data.forecasts"]
    assert bucket_containing(s3_server.client(), bucket, "globex-canary")
    assert qdrant_payloads_containing(qdrant, "tenantry", "globex-canary")
    verified = cli("audit", "verify")
    assert "acme: ok" in verified and "FAILED" not in verified
    certificate = next((server.data_dir / "evidence" / "deletions").glob("acme-*.json"))
    assert "deletion certificate ok" in cli("audit", "verify", "--certificate", str(certificate))
