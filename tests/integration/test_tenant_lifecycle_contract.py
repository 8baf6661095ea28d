"""One contract over every backend: a tenant's data exported from every registered store, then
erased until nothing of it is left, embedded (SQLite, sqlite-vec, local files) and on real servers
(PostgreSQL under RLS, the moto S3 server, Qdrant local) chosen in a TOML configuration."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest

from tenantry.admin.actions import create_api_key
from tenantry.core.settings import load_settings
from tenantry.demo.schema import SQLITE_DEMO_SCHEMA
from tenantry.lifecycle.bundle import file_sha256
from tenantry.lifecycle.delete import delete_tenant
from tenantry.lifecycle.export import export_tenant
from tenantry.lifecycle.registry import tenant_data_of
from tenantry.runtime import Runtime
from tenantry.scoping.vectors.base import VectorDocument
from tests.support.leftovers import (
    bucket_containing,
    files_containing,
    pg_tables_containing,
    qdrant_payloads_containing,
)
from tests.support.s3 import MotoServer
from tests.support.server import run_cli
from tests.support.store import init_store
from tests.support.tenant_sql import tenant_database, write_scaled_config

TENANTS = ("acme", "globex")


@dataclass
class Deployment:
    data_dir: Path
    config: Path | None
    admin_url: str | None = None
    bucket: str | None = None
    s3: MotoServer | None = None

    def runtime(self) -> Runtime:
        return Runtime(load_settings(self.config, data_dir=self.data_dir), create=True)


@pytest.fixture(
    params=[
        "embedded",
        pytest.param("postgres-s3-qdrant", marks=pytest.mark.postgres),
        pytest.param("postgres-schema-per-tenant", marks=pytest.mark.postgres),
    ]
)
def deployment(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Deployment]:
    data_dir = tmp_path / "data"
    if request.param == "embedded":
        yield Deployment(data_dir, None)
        return
    if request.param == "postgres-schema-per-tenant":
        request.getfixturevalue("postgres_available")
        with tenant_database(data_dir) as db:
            config = tmp_path / "tenantry.toml"
            config.write_text(f'[sql]\nurl = "{db.tools_url}"\nisolation = "schema"\n')
            init_store(data_dir)
            run_cli("db", "migrate", "--owner-url", db.owner_url, "--demo", "--tools-role", db.tools_role,
                    "--config", str(config), data_dir=data_dir)  # fmt: skip
            yield Deployment(data_dir, config, admin_url=db.admin_url)
        return
    request.getfixturevalue("postgres_available")
    s3: MotoServer = request.getfixturevalue("s3_server")
    with tenant_database(data_dir) as db:
        run_cli("db", "migrate", "--owner-url", db.owner_url, "--demo", "--tools-role", db.tools_role,
                data_dir=data_dir)  # fmt: skip
        bucket = s3.create_bucket()
        config = write_scaled_config(tmp_path / "tenantry.toml", db, bucket, s3.endpoint_url)
        try:
            yield Deployment(data_dir, config, admin_url=db.admin_url, bucket=bucket, s3=s3)
        finally:
            s3.delete_bucket(bucket)


def _seed(runtime: Runtime, tenant: str, canary: str) -> None:
    """The tenant uses every store, each holding the canary."""
    runtime.store.create_tenant(tenant, name=f"{tenant} inc", tools=["whoami"])
    create_api_key(runtime.store, tenant, actor="test", name=f"key {canary}")
    runtime.secrets.set_secret(tenant, "mail_api_key", f"{canary}-secret-value")
    scopes = runtime.scopes

    async def fill() -> None:
        sql = scopes.sql.for_tenant(tenant)
        if sql.dialect == "sqlite":
            for statement in SQLITE_DEMO_SCHEMA:
                await sql.execute(statement)
        await sql.execute("INSERT INTO customers (name, email) VALUES (?, ?)", f"{canary} Carol", "c@x.example")
        files = scopes.files.for_tenant(tenant)
        await files.write_text(f"notes/{canary}.txt", f"file body {canary}")
        await files.write_bytes("blob.bin", b"\x00\xff" + canary.encode())
        await scopes.vectors.for_tenant(tenant).upsert(
            [VectorDocument(id="d1", text=f"doc {canary}", metadata={"m": canary})]
        )

    anyio.run(fill)


def _bundle_bytes(bundle: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(bundle.rglob("*")) if p.is_file())


def _everywhere(deployment: Deployment, needle: str, *, qdrant: bool = True) -> dict[str, object]:
    """Where ``needle`` is found; Qdrant's local directory only once no runtime holds it open."""
    found: dict[str, object] = {"files": files_containing(deployment.data_dir, needle)}
    if deployment.admin_url is not None:
        found["postgres"] = pg_tables_containing(deployment.admin_url, needle)
    if deployment.s3 is not None and deployment.bucket is not None:
        found["bucket"] = bucket_containing(deployment.s3.client(), deployment.bucket, needle)
    if deployment.s3 is not None and qdrant:
        found["qdrant"] = qdrant_payloads_containing(deployment.data_dir / "vectors" / "qdrant", "tenantry", needle)
    return {where: hits for where, hits in found.items() if hits}


def test_every_store_exports_the_tenant_then_erases_it_to_nothing(deployment: Deployment, tmp_path: Path) -> None:
    canaries = {t: f"{t}-canary-{secrets.token_hex(6)}" for t in TENANTS}
    runtime = deployment.runtime()
    try:
        for tenant, canary in canaries.items():
            _seed(runtime, tenant, canary)
        entries = tenant_data_of(runtime)
        expected = {"sql", "vectors", "files", "secrets", "controlplane", "audit", "data-dir"}
        assert {e.name.split(":")[0] for e in entries} == expected

        bundle = tmp_path / "acme-bundle"
        outcome = export_tenant(runtime, "acme", bundle, actor="test")
        held = _bundle_bytes(bundle)
        manifest = json.loads((bundle / "manifest.json").read_text())
        # Every store's part carries the canary: SQL row, both files, the vector document, the key's name.
        assert held.count(canaries["acme"].encode()) >= 5
        assert (bundle / "files" / "notes" / f"{canaries['acme']}.txt").read_text() == f"file body {canaries['acme']}"
        assert (bundle / "files" / "blob.bin").read_bytes() == b"\x00\xff" + canaries["acme"].encode()
        assert canaries["acme"] in (bundle / "vectors" / "documents.jsonl").read_text()
        assert canaries["acme"] in next((bundle / "sql").glob("customers.jsonl")).read_text()
        # Secrets: the name and dates, never the value; and nothing of the other tenant.
        assert b"mail_api_key" in held and b"secret-value" not in held
        assert canaries["globex"].encode() not in held and b"globex" not in held
        for part in manifest["parts"]:
            assert file_sha256(bundle / part["path"]) == (part["bytes"], part["sha256"])
        assert outcome.parts == len(manifest["parts"])

        # Positive controls: the scanners, and every store's own account, see the tenant before.
        assert _everywhere(deployment, canaries["acme"], qdrant=False)
        empty = {e.name.split(":")[0] for e in entries if not e.leftovers("acme")}
        assert empty <= {"audit", "data-dir"}  # retained; and a sweep with nothing of its own on servers

        deleted = delete_tenant(runtime, "acme", actor="test")
        assert set(deleted.erased) == {e.name for e in entries if not e.retained}
        assert deleted.retained == [e.name for e in entries if e.retained]
        for entry in entries:
            assert entry.leftovers("acme") == [], entry.name
            entry.erase("acme")  # idempotent: a second erasure finds nothing and fails nothing
            assert entry.leftovers("acme") == [], entry.name
        assert runtime.store.get_tenant("acme") is None
        assert runtime.store.get_data_key("acme") is None

        async def other_tenant_reads() -> tuple[list[dict[str, object]], str, int]:
            scopes = runtime.scopes
            rows = await scopes.sql.for_tenant("globex").fetch("SELECT name FROM customers")
            text = await scopes.files.for_tenant("globex").read_text(f"notes/{canaries['globex']}.txt")
            return rows, text, await scopes.vectors.for_tenant("globex").count()

        rows, text, documents = anyio.run(other_tenant_reads)
        assert rows == [{"name": f"{canaries['globex']} Carol"}] and canaries["globex"] in text and documents == 1
        assert runtime.secrets.read_secret("globex", "mail_api_key") == f"{canaries['globex']}-secret-value"
    finally:
        runtime.close()
    assert _everywhere(deployment, canaries["acme"]) == {}
    assert set(_everywhere(deployment, canaries["globex"])) >= {"files"}  # the other tenant is untouched
