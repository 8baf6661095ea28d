"""The embedded SQL handle: one database per tenant, and no statement can leave it."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from tenantry.core.errors import QueryFailed, ScopeViolation, UsageError
from tenantry.scoping.sql.sqlite import SqliteSqlScopes

pytestmark = pytest.mark.anyio


@pytest.fixture
async def scopes(tmp_path: Path):
    scopes = SqliteSqlScopes(tmp_path, row_limit=50)
    for tenant in ("acme", "globex"):
        sql = scopes.for_tenant(tenant)
        await sql.execute("CREATE TABLE customers (name TEXT)")
        await sql.execute("INSERT INTO customers VALUES (?)", f"{tenant}-canary")
    yield scopes
    scopes.close()


async def test_each_tenant_sees_only_its_rows(scopes: SqliteSqlScopes) -> None:
    assert await scopes.for_tenant("acme").fetch("SELECT name FROM customers") == [{"name": "acme-canary"}]
    assert await scopes.for_tenant("globex").fetch("SELECT name FROM customers") == [{"name": "globex-canary"}]


async def test_injected_sql_in_a_bound_value_stays_a_value(scopes: SqliteSqlScopes) -> None:
    sql = scopes.for_tenant("acme")
    rows = await sql.fetch("SELECT name FROM customers WHERE name LIKE ?", "%' OR 1=1 --")
    assert rows == []


@pytest.mark.parametrize(
    "statement",
    [
        "ATTACH DATABASE '{other}' AS other",
        "ATTACH '{other}' AS x",
        "VACUUM INTO '/tmp/tenantry-escape.sqlite3'",
        "SELECT load_extension('/tmp/evil.so')",
        "PRAGMA writable_schema = ON",
        "PRAGMA journal_mode = DELETE",
        "PRAGMA trusted_schema = ON",
        "PRAGMA database_list",
        "SELECT * FROM pragma_database_list",
        "DETACH DATABASE main",
        "CREATE VIRTUAL TABLE v USING fts5(x)",
        "SELECT fts3_tokenizer('simple')",
    ],
)
async def test_statements_that_leave_the_tenant_database_are_refused(
    scopes: SqliteSqlScopes, tmp_path: Path, statement: str
) -> None:
    other = tmp_path / "tenants" / "globex" / "data.sqlite3"
    with pytest.raises((ScopeViolation, QueryFailed)):
        await scopes.for_tenant("acme").fetch(statement.format(other=other))
    assert not await anyio.Path("/tmp/tenantry-escape.sqlite3").exists()


async def test_attach_is_a_scope_violation_not_a_generic_error(scopes: SqliteSqlScopes, tmp_path: Path) -> None:
    other = tmp_path / "tenants" / "globex" / "data.sqlite3"
    with pytest.raises(ScopeViolation):
        await scopes.for_tenant("acme").execute(f"ATTACH DATABASE '{other}' AS g")


async def test_introspection_pragmas_are_allowed(scopes: SqliteSqlScopes) -> None:
    columns = await scopes.for_tenant("acme").fetch("PRAGMA table_info(customers)")
    assert [c["name"] for c in columns] == ["name"]


async def test_row_limit_refuses_unbounded_results(scopes: SqliteSqlScopes) -> None:
    sql = scopes.for_tenant("acme")
    await sql.executemany("INSERT INTO customers VALUES (?)", [(f"c{i}",) for i in range(60)])
    with pytest.raises(UsageError, match="more than 50 rows"):
        await sql.fetch("SELECT * FROM customers")
    assert len(await sql.fetch("SELECT * FROM customers LIMIT 10")) == 10


async def test_syntax_errors_are_query_failures(scopes: SqliteSqlScopes) -> None:
    with pytest.raises(QueryFailed):
        await scopes.for_tenant("acme").fetch("SELEC nonsense")


async def test_invalid_tenant_ids_never_become_paths(scopes: SqliteSqlScopes) -> None:
    for bad in ("../globex", "ACME", "", "a/b"):
        with pytest.raises(UsageError):
            scopes.for_tenant(bad)
