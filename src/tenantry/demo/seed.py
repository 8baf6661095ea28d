"""Seeding the demo tenants, their grants and their canary data (idempotent)."""

from __future__ import annotations

from tenantry.controlplane.base import TenantStore
from tenantry.demo.tools import ACME_GRANTS, GLOBEX_GRANTS
from tenantry.scoping.handles import DataScopes

__all__ = ["seed_demo", "DEMO_TENANTS"]

DEMO_TENANTS = {
    "acme": ("Acme Corporation", ACME_GRANTS),
    "globex": ("Globex Corporation", GLOBEX_GRANTS),
}

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


async def seed_demo(store: TenantStore, scopes: DataScopes) -> list[str]:
    """Create ``acme`` and ``globex`` with grants, customers, files and forecasts if absent.

    Returns the ids of tenants created now (empty on a restart).
    """
    created: list[str] = []
    for tenant_id, (name, grants) in DEMO_TENANTS.items():
        if store.get_tenant(tenant_id) is None:
            store.create_tenant(tenant_id, name=name, tools=grants)
            created.append(tenant_id)
        await _seed_data(tenant_id, scopes)
    return created


async def _seed_data(tenant_id: str, scopes: DataScopes) -> None:
    sql = scopes.sql.for_tenant(tenant_id)
    await sql.execute("CREATE TABLE IF NOT EXISTS customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT)")
    existing = await sql.fetchone("SELECT COUNT(*) AS n FROM customers")
    if existing is not None and existing["n"] == 0:
        await sql.executemany("INSERT INTO customers (name, email) VALUES (?, ?)", _CUSTOMERS[tenant_id])
    if tenant_id == "globex":
        await sql.execute("CREATE TABLE IF NOT EXISTS forecasts (quarter TEXT PRIMARY KEY, revenue INTEGER, note TEXT)")
        await sql.executemany(
            "INSERT OR IGNORE INTO forecasts (quarter, revenue, note) VALUES (?, ?, ?)",
            [
                ("Q1", 1_200_000, "globex-canary forecast"),
                ("Q2", 1_350_000, "steady"),
                ("Q3", 1_500_000, "launch"),
                ("Q4", 1_800_000, "holiday"),
            ],
        )
    files = scopes.files.for_tenant(tenant_id)
    seeded = {entry.path for entry in await files.list()}
    samples = {
        "README.md": f"# {tenant_id} shared drive\n\nMarker: {tenant_id}-canary\n",
        "reports/q3.txt": f"{tenant_id} Q3 report. Confidential: {tenant_id}-canary\n",
    }
    for path, text in samples.items():
        if path not in seeded:
            await files.write_text(path, text)
