"""Seeding the demo tenants, their grants and their canary data (idempotent)."""

from __future__ import annotations

import secrets
from typing import Protocol

from tenantry.controlplane.base import TenantStore
from tenantry.demo.catalogue import DEMO_TENANTS
from tenantry.demo.schema import SQLITE_DEMO_SCHEMA
from tenantry.scoping.handles import DataScopes
from tenantry.scoping.vectors.base import VectorDocument

__all__ = ["seed_demo", "DEMO_TENANTS", "DemoSecretWriter"]


class DemoSecretWriter(Protocol):
    def list_names(self, tenant_id: str) -> list[str]: ...

    def set_secret(self, tenant_id: str, name: str, value: str) -> bool: ...


_CUSTOMERS = {
    "acme": [
        ("Alice Anderson", "alice@acme.example"),
        ("Bob Brown", "bob@acme.example"),
        ("acme-canary Carol", "acme-canary@acme.example"),
    ],
    "globex": [
        ("Gina Gold", "gina@globex.example"),
        ("Hank Hill", "hank@globex.example"),
        ("globex-canary Ivan", "globex-canary@globex.example"),
    ],
}


_DOCUMENTS = {
    tenant: [
        (
            "handbook",
            f"{tenant.title()} employee handbook",
            f"How {tenant} staff request leave, expenses and equipment. Marker: {tenant}-canary",
        ),
        (
            "pricing",
            f"{tenant.title()} pricing policy",
            f"{tenant} list prices, discounts above ten percent need approval. Confidential {tenant}-canary",
        ),
        ("security", f"{tenant.title()} security policy", f"Passwords, laptops and incident reporting at {tenant}."),
    ]
    for tenant in ("acme", "globex")
}


async def seed_demo(store: TenantStore, scopes: DataScopes, secret_writer: DemoSecretWriter) -> list[str]:
    """Create ``acme`` and ``globex`` with grants, customers, forecasts, documents, files and a
    ``mail_api_key`` secret, where absent (idempotent).

    Returns the ids of tenants created now (empty on a restart).
    """
    created: list[str] = []
    for tenant_id, (name, grants) in DEMO_TENANTS.items():
        if store.get_tenant(tenant_id) is None:
            store.create_tenant(tenant_id, name=name, tools=grants)
            created.append(tenant_id)
        await _seed_data(tenant_id, scopes)
        if "mail_api_key" not in secret_writer.list_names(tenant_id):
            secret_writer.set_secret(tenant_id, "mail_api_key", f"{tenant_id}-canary-mail-{secrets.token_hex(12)}")
    return created


async def _seed_data(tenant_id: str, scopes: DataScopes) -> None:
    sql = scopes.sql.for_tenant(tenant_id)
    if scopes.sql.dialect == "sqlite":  # on PostgreSQL the owner role creates tables: `tenantry db migrate --demo`
        for statement in SQLITE_DEMO_SCHEMA:
            await sql.execute(statement)
    existing = await sql.fetchone("SELECT COUNT(*) AS n FROM customers")
    if existing is not None and existing["n"] == 0:
        await sql.executemany("INSERT INTO customers (name, email) VALUES (?, ?)", _CUSTOMERS[tenant_id])
    if tenant_id == "globex":
        await sql.executemany(
            "INSERT INTO forecasts (quarter, revenue, note) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            [
                ("Q1", 1_200_000, "globex-canary forecast"),
                ("Q2", 1_350_000, "steady"),
                ("Q3", 1_500_000, "launch"),
                ("Q4", 1_800_000, "holiday"),
            ],
        )
    vectors = scopes.vectors.for_tenant(tenant_id)
    if await vectors.count(collection="docs") == 0:
        documents = [
            VectorDocument(id=doc_id, text=text, metadata={"title": title})
            for doc_id, title, text in _DOCUMENTS[tenant_id]
        ]
        await vectors.upsert(documents, collection="docs")
    files = scopes.files.for_tenant(tenant_id)
    seeded = {entry.path for entry in await files.list()}
    samples = {
        "README.md": f"# {tenant_id} shared drive\n\nMarker: {tenant_id}-canary\n",
        "reports/q3.txt": f"{tenant_id} Q3 report. Confidential: {tenant_id}-canary\n",
    }
    for path, text in samples.items():
        if path not in seeded:
            await files.write_text(path, text)
