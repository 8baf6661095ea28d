"""``ctx.sql`` on PostgreSQL: row-level security that SQL run by a tool cannot switch off or around."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from pathlib import Path

import anyio
import psycopg
import pytest

from tenantry.core.errors import QueryFailed, ScopeViolation, StorageError
from tenantry.scoping.sql.postgres import PostgresSqlScopes
from tests.support.server import run_cli
from tests.support.store import init_store
from tests.support.tenant_sql import TenantDatabase, tenant_database

pytestmark = [pytest.mark.postgres, pytest.mark.anyio]


@pytest.fixture(scope="module")
def database(postgres_available: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TenantDatabase]:
    with tenant_database(tmp_path_factory.mktemp("pgsql") / "data") as db:
        run_cli(
            "db", "migrate", "--owner-url", db.owner_url, "--demo", "--tools-role", db.tools_role, data_dir=db.data_dir
        )
        yield db


@pytest.fixture(scope="module")
def scopes(database: TenantDatabase) -> Iterator[PostgresSqlScopes]:
    scopes = PostgresSqlScopes(database.tools_url, tenant_key=database.tenant_key, pool_max=3)
    scopes.check()
    yield scopes
    scopes.close()


@pytest.fixture
async def seeded(scopes: PostgresSqlScopes) -> None:
    for tenant in ("acme", "globex", "acme-evil"):
        sql = scopes.for_tenant(tenant)
        await sql.execute("DELETE FROM customers")
        await sql.executemany(
            "INSERT INTO customers (name, email) VALUES (?, ?)",
            [(f"{tenant} customer", f"one@{tenant}.example"), (f"{tenant}-canary", f"canary@{tenant}.example")],
        )


async def test_each_tenant_sees_only_its_own_rows(scopes: PostgresSqlScopes, seeded: None) -> None:
    acme = await scopes.for_tenant("acme").fetch("SELECT tenant_id, name FROM customers ORDER BY name")
    globex = await scopes.for_tenant("globex").fetch("SELECT tenant_id, name FROM customers ORDER BY name")
    assert [r["name"] for r in acme] == ["acme customer", "acme-canary"]
    assert {r["tenant_id"] for r in acme} == {"acme"}
    assert [r["name"] for r in globex] == ["globex customer", "globex-canary"]


async def test_insert_defaults_to_the_calling_tenant_and_counts_rows(scopes: PostgresSqlScopes, seeded: None) -> None:
    sql = scopes.for_tenant("acme")
    assert await sql.execute("INSERT INTO outbox (recipient, subject, body, queued_at) VALUES (?, ?, ?, ?)",
                             "a@b", "s", "b", "now") == 1  # fmt: skip
    row = await sql.fetchone("SELECT tenant_id FROM outbox WHERE recipient = ?", "a@b")
    assert row == {"tenant_id": "acme"}
    assert await scopes.for_tenant("globex").fetchone("SELECT count(*) AS n FROM outbox") == {"n": 0}


INJECTED_QUERIES = [
    # The tool's argument is pasted into SQL by a careless author; each tries to reach globex.
    "SELECT name FROM customers WHERE name LIKE '%' OR tenant_id = 'globex'",
    "SELECT name FROM customers WHERE tenant_id = 'globex'",
    "SELECT (SELECT set_config('tenantry.tenant_id', 'globex', true)) AS s, name FROM customers",
    "SELECT name FROM customers WHERE set_config('tenantry.tenant_id', 'globex', true) IS NOT NULL",
    "SELECT name, (SELECT set_config('tenantry.tenant_proof', md5('x'), true)) FROM customers",
    "WITH s AS (SELECT set_config('tenantry.tenant_id', 'globex', false)) SELECT name FROM customers, s",
    "SELECT name FROM tenant_data.customers UNION ALL SELECT name FROM public.customers",
]


@pytest.mark.parametrize("query", INJECTED_QUERIES)
async def test_injected_sql_never_returns_another_tenants_rows(
    scopes: PostgresSqlScopes, seeded: None, query: str
) -> None:
    sql = scopes.for_tenant("acme")
    try:
        rows = await sql.fetch(query)
    except (ScopeViolation, QueryFailed):
        rows = []
    assert "globex customer" not in repr(rows) and "globex-canary" not in repr(rows)
    # The next call on the same pool still works and is still acme's.
    after = await sql.fetch("SELECT name FROM customers ORDER BY name")
    assert [r["name"] for r in after] == ["acme customer", "acme-canary"]


async def test_a_session_level_tenant_setting_left_by_a_tool_does_not_reach_the_next_call(
    scopes: PostgresSqlScopes, seeded: None
) -> None:
    acme = scopes.for_tenant("acme")
    globex = scopes.for_tenant("globex")
    proof = scopes._proof  # a tool never has this; the attack gets the best it could possibly get
    for _ in range(6):  # cover every pooled connection
        await acme.fetch("SELECT set_config('tenantry.tenant_id', 'globex', false)")
        await acme.fetch("SELECT set_config('tenantry.tenant_proof', 'forged', false)")
        assert "globex-canary" not in repr(await acme.fetch("SELECT name FROM customers"))
        assert [r["name"] for r in await globex.fetch("SELECT name FROM customers ORDER BY name")] == [
            "globex customer",
            "globex-canary",
        ]
    assert proof is not None


async def test_a_held_cursor_does_not_carry_rows_to_the_next_tenant(scopes: PostgresSqlScopes, seeded: None) -> None:
    for _ in range(6):  # every pooled connection
        await scopes.for_tenant("globex").execute("DECLARE held CURSOR WITH HOLD FOR SELECT name FROM customers")
        with pytest.raises(QueryFailed, match="34000"):
            await scopes.for_tenant("acme").fetch("FETCH ALL FROM held")


@pytest.mark.parametrize(
    "setting",
    [
        "U&\"s\\0065t_config\"('search_path', 'pg_catalog', false)",
        "U&\"s\\0065t_config\"('default_transaction_read_only', 'on', false)",
        "query_to_xml('SELECT set_config(''TimeZone'', ''Pacific/Kiritimati'', false)', false, false, '')",
    ],
)
async def test_a_session_setting_made_by_any_means_does_not_reach_the_next_tenant(
    database: TenantDatabase, setting: str
) -> None:
    scopes = PostgresSqlScopes(database.tools_url, tenant_key=database.tenant_key, pool_max=1)
    try:
        with contextlib.suppress(ScopeViolation):  # query_to_xml is revoked from the tools role
            await scopes.for_tenant("acme").fetch(f"SELECT {setting} AS s")
        globex = scopes.for_tenant("globex")
        assert await globex.execute("INSERT INTO outbox (recipient, subject, body, queued_at) VALUES (?, ?, ?, ?)",
                                    "x@y", "s", "b", "t") == 1  # fmt: skip
        row = await globex.fetchone("SELECT current_setting('TimeZone') AS tz, count(*) AS n FROM outbox")
        assert row is not None and row["n"] >= 1 and row["tz"] != "Pacific/Kiritimati"
    finally:
        scopes.close()


async def test_a_failed_call_does_not_return_its_connection_to_the_pool(database: TenantDatabase) -> None:
    scopes = PostgresSqlScopes(database.tools_url, tenant_key=database.tenant_key, pool_max=1)
    try:
        acme = scopes.for_tenant("acme")
        pid = (await acme.fetchone("SELECT pg_backend_pid() AS pid"))["pid"]  # type: ignore[index]
        with pytest.raises(QueryFailed):
            await acme.fetch("SELECT 1 / 0")
        after = (await scopes.for_tenant("globex").fetchone("SELECT pg_backend_pid() AS pid"))["pid"]  # type: ignore[index]
        assert after != pid
    finally:
        scopes.close()


async def test_another_backends_proof_is_refused(database: TenantDatabase, seeded: None) -> None:
    """A proof leaked from one connection does not open another tenant's rows on a different backend."""
    from tenantry.scoping.sql.pg_schema import TenantProof

    proof = TenantProof(database.tenant_key)
    with psycopg.connect(database.tools_url) as conn:
        pid = conn.info.backend_pid
        conn.execute("SELECT set_config('tenantry.tenant_id', 'globex', true)")
        conn.execute("SELECT set_config('tenantry.tenant_proof', %s, true)", (proof.for_backend("globex", pid + 1),))
        assert conn.execute("SELECT count(*) FROM tenant_data.customers").fetchone() == (0,)
        conn.rollback()
        # Positive control: the right proof for this backend does open globex's rows.
        conn.execute("SELECT set_config('tenantry.tenant_id', 'globex', true)")
        conn.execute("SELECT set_config('tenantry.tenant_proof', %s, true)", (proof.for_backend("globex", pid),))
        assert conn.execute("SELECT count(*) FROM tenant_data.customers").fetchone() == (2,)


async def test_a_proof_made_with_another_key_is_refused(database: TenantDatabase, seeded: None) -> None:
    forged = PostgresSqlScopes(database.tools_url, tenant_key=b"k" * 32, pool_max=1)
    try:
        with pytest.raises(StorageError, match="does not accept this server's SQL tenant key"):
            forged.check()
        assert await forged.for_tenant("globex").fetch("SELECT name FROM customers") == []
    finally:
        forged.close()


REFUSED_STATEMENTS = [
    "SET ROLE {owner}",
    "SET SESSION AUTHORIZATION postgres",
    "SELECT * FROM tenantry_rls.tenant_key",
    "TRUNCATE customers",
    "ALTER TABLE customers DISABLE ROW LEVEL SECURITY",
    "ALTER TABLE customers NO FORCE ROW LEVEL SECURITY",
    "DROP POLICY tenant_isolation ON customers",
    "CREATE POLICY open_all ON customers USING (true)",
    "SELECT query FROM pg_stat_activity",
    "INSERT INTO customers (tenant_id, name) VALUES ('globex', 'planted')",
    "UPDATE customers SET tenant_id = 'globex'",
    "CREATE TABLE tenant_data.stolen AS SELECT * FROM customers",
    "CREATE TABLE public.stolen AS SELECT * FROM customers",
    "CREATE TEMP TABLE stolen AS SELECT * FROM customers",
    # Channels between sessions of the one tools role, outside row-level security:
    "SELECT lo_from_bytea(0, convert_to('planted', 'UTF8'))",
    "SELECT oid FROM pg_largeobject_metadata",
    "SELECT pg_stat_get_backend_activity(b) FROM pg_stat_get_backend_idset() AS b",
    "SELECT pg_terminate_backend(pg_backend_pid() + 1)",
    "SELECT pg_cancel_backend(pg_backend_pid() + 1)",
    "SELECT lastval()",
    "SELECT pg_advisory_lock(42)",
    'SELECT U&"pg_\\0061dvisory_lock"(42)',
    "SELECT name FROM pg_prepared_statements",
    "SELECT * FROM pg_locks",
    "SELECT n_live_tup FROM pg_stat_user_tables",
]


@pytest.mark.parametrize("statement", REFUSED_STATEMENTS)
async def test_statements_that_would_widen_access_are_refused(
    scopes: PostgresSqlScopes, database: TenantDatabase, seeded: None, statement: str
) -> None:
    owner = database.owner_url.split("//")[1].split("@")[0]
    with pytest.raises(ScopeViolation):
        await scopes.for_tenant("acme").execute(statement.format(owner=owner))
    rows = await scopes.for_tenant("globex").fetch("SELECT name FROM customers ORDER BY name")
    assert [r["name"] for r in rows] == ["globex customer", "globex-canary"]


async def test_control_plane_and_audit_are_out_of_reach_of_tool_sql(
    scopes: PostgresSqlScopes, database: TenantDatabase
) -> None:
    for table in ("tenantry.tenants", "tenantry.api_keys", "tenantry_audit.events"):
        with pytest.raises(ScopeViolation):
            await scopes.for_tenant("acme").fetch(f"SELECT * FROM {table}")


async def test_two_statements_in_one_call_are_refused(scopes: PostgresSqlScopes, seeded: None) -> None:
    with pytest.raises(QueryFailed, match="42601"):
        await scopes.for_tenant("acme").fetch("SELECT 1; COMMIT; SELECT name FROM customers")


async def test_question_marks_in_literals_are_not_placeholders(scopes: PostgresSqlScopes, seeded: None) -> None:
    rows = await scopes.for_tenant("acme").fetch("SELECT '?' AS q, $$100%?$$ AS d, name FROM customers WHERE name = ?",
                                                 "acme-canary")  # fmt: skip
    assert rows == [{"q": "?", "d": "100%?", "name": "acme-canary"}]


async def test_pool_reuse_under_interleaved_tenants_never_leaks(database: TenantDatabase) -> None:
    """Many tenants' transactions interleaved on a two-connection pool: each sees only itself."""
    scopes = PostgresSqlScopes(database.tools_url, tenant_key=database.tenant_key, pool_max=2)
    tenants = [f"stress-{i}" for i in range(40)]
    try:
        for tenant in tenants:
            await scopes.for_tenant(tenant).execute("INSERT INTO forecasts (quarter, note) VALUES (?, ?)",
                                                    "Q1", f"{tenant}-canary")  # fmt: skip
        leaks: list[str] = []

        async def worker(seed: int) -> None:
            rng = random.Random(seed)
            for _ in range(60):
                tenant = rng.choice(tenants)
                rows = await scopes.for_tenant(tenant).fetch("SELECT tenant_id, note FROM forecasts")
                if rows != [{"tenant_id": tenant, "note": f"{tenant}-canary"}]:
                    leaks.append(f"{tenant}: {rows}")

        async with anyio.create_task_group() as tg:
            for seed in range(8):
                tg.start_soon(worker, seed)
        assert leaks == []
    finally:
        scopes.close()


async def test_a_superuser_url_is_refused_at_start(database: TenantDatabase) -> None:
    scopes = PostgresSqlScopes(database.admin_url, tenant_key=database.tenant_key, pool_max=1)
    try:
        with pytest.raises(StorageError, match="ignores row-level security"):
            scopes.check()
    finally:
        scopes.close()


async def test_an_unreachable_database_is_a_clear_storage_error() -> None:
    scopes = PostgresSqlScopes("postgresql://nobody@127.0.0.1:1/none", tenant_key=b"k" * 32, pool_max=1, pool_timeout=1)
    try:
        with pytest.raises(StorageError, match="busy or unreachable"):
            await scopes.for_tenant("acme").fetch("SELECT 1")
    finally:
        scopes.close()


def test_migrate_refuses_a_table_without_tenant_id(database: TenantDatabase, tmp_path: Path) -> None:
    bad = tmp_path / "bad.sql"
    bad.write_text("CREATE TABLE notes (id int PRIMARY KEY, body text);")
    result = run_cli("db", "migrate", "--owner-url", database.owner_url, str(bad), "--tools-role",
                     database.tools_role, data_dir=database.data_dir, check=False)  # fmt: skip
    assert result.returncode != 0
    assert "notes needs a column tenant_id text" in result.stderr


def test_migrate_refuses_a_unique_index_without_tenant_id(database: TenantDatabase, tmp_path: Path) -> None:
    bad = tmp_path / "bad.sql"
    bad.write_text("CREATE TABLE accounts (tenant_id text NOT NULL, email text UNIQUE);")
    result = run_cli("db", "migrate", "--owner-url", database.owner_url, str(bad), "--tools-role",
                     database.tools_role, data_dir=database.data_dir, check=False)  # fmt: skip
    assert result.returncode != 0
    assert "must have tenant_id among its key columns" in result.stderr


@pytest.fixture(scope="module")
def schema_database(postgres_available: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TenantDatabase]:
    data_dir = tmp_path_factory.mktemp("pgschema") / "data"
    with tenant_database(data_dir) as db:
        config = data_dir.parent / "tenantry.toml"
        config.write_text('[sql]\nisolation = "schema"\n')
        init_store(data_dir)
        for tenant in ("acme", "globex"):
            run_cli("tenant", "create", tenant, data_dir=data_dir)
        run_cli("db", "migrate", "--owner-url", db.owner_url, "--demo", "--tools-role", db.tools_role,
                "--config", str(config), data_dir=data_dir)  # fmt: skip
        yield db


async def test_schema_per_tenant_keeps_tables_apart_and_rls_still_guards_them(schema_database: TenantDatabase) -> None:
    scopes = PostgresSqlScopes(schema_database.tools_url, tenant_key=schema_database.tenant_key, isolation="schema")
    try:
        scopes.check()
        for tenant in ("acme", "globex"):
            await scopes.for_tenant(tenant).execute("INSERT INTO customers (name) VALUES (?)", f"{tenant}-canary")
        with psycopg.connect(schema_database.admin_url) as conn:
            placed = conn.execute("SELECT tenant_id FROM tenant_data_globex.customers").fetchall()
        assert placed == [("globex",)]
        acme = scopes.for_tenant("acme")
        assert await acme.fetch("SELECT name FROM customers") == [{"name": "acme-canary"}]
        # Naming the other tenant's schema outright still finds nothing: its rows are globex's.
        assert await acme.fetch('SELECT name FROM "tenant_data_globex".customers') == []
    finally:
        scopes.close()


async def test_schema_mode_names_a_missing_tenant_schema(schema_database: TenantDatabase) -> None:
    scopes = PostgresSqlScopes(schema_database.tools_url, tenant_key=schema_database.tenant_key, isolation="schema")
    try:
        with pytest.raises((StorageError, QueryFailed)):
            await scopes.for_tenant("newcomer").fetch("SELECT name FROM customers")
    finally:
        scopes.close()


@pytest.mark.parametrize(
    ("schema_sql", "message"),
    [
        ("CREATE TABLE accounts (tenant_id text NOT NULL, email text);"
         " CREATE UNIQUE INDEX accounts_email ON accounts (email) INCLUDE (tenant_id);",
         "must have tenant_id among its key"),
        ("CREATE TABLE handles (tenant_id text NOT NULL, handle text, EXCLUDE USING hash (handle WITH =));",
         "must have tenant_id among its key"),
        ("CREATE TABLE projects (tenant_id text NOT NULL, code text, PRIMARY KEY (tenant_id, code));"
         " CREATE TABLE tasks (tenant_id text NOT NULL, project_tenant text, code text,"
         " FOREIGN KEY (project_tenant, code) REFERENCES projects (tenant_id, code));",
         "must map tenant_id to the referenced tenant_id"),
    ],
    ids=["unique-index-with-include", "exclusion-constraint", "foreign-key-without-tenant"],
)  # fmt: skip
def test_migrate_refuses_constraints_that_see_across_tenants(
    database: TenantDatabase, tmp_path: Path, schema_sql: str, message: str
) -> None:
    bad = tmp_path / "bad.sql"
    bad.write_text(schema_sql)
    result = run_cli("db", "migrate", "--owner-url", database.owner_url, str(bad), "--tools-role",
                     database.tools_role, data_dir=database.data_dir, check=False)  # fmt: skip
    assert result.returncode != 0
    assert message in result.stderr


def test_migrate_accepts_a_foreign_key_that_carries_the_tenant(database: TenantDatabase, tmp_path: Path) -> None:
    good = tmp_path / "good.sql"
    good.write_text(
        "CREATE TABLE IF NOT EXISTS projects (tenant_id text NOT NULL, code text, PRIMARY KEY (tenant_id, code));"
        " CREATE TABLE IF NOT EXISTS tasks (tenant_id text NOT NULL, code text,"
        " FOREIGN KEY (tenant_id, code) REFERENCES projects (tenant_id, code));"
    )
    result = run_cli("db", "migrate", "--owner-url", database.owner_url, str(good), "--tools-role",
                     database.tools_role, data_dir=database.data_dir)  # fmt: skip
    assert "tasks" in result.stdout


@pytest.mark.parametrize(
    "statement",
    [
        "SET tenantry.tenant_id = 'globex'",
        "SET SESSION tenantry.tenant_id = 'globex'",
        "SET LOCAL tenantry.tenant_id = 'globex'",
        "RESET tenantry.tenant_proof",
        "RESET ALL",
        "RESET ROLE",
        "SELECT set_config('tenantry.tenant_id', 'globex', false)",
    ],
)
async def test_set_and_reset_statements_never_reach_another_tenants_rows(
    database: TenantDatabase, seeded: None, statement: str
) -> None:
    scopes = PostgresSqlScopes(database.tools_url, tenant_key=database.tenant_key, pool_max=1)
    try:
        acme = scopes.for_tenant("acme")
        with contextlib.suppress(ScopeViolation, QueryFailed):
            await acme.execute(statement)
        rows = await acme.fetch("SELECT tenant_id, name FROM customers ORDER BY name")
        assert [r["name"] for r in rows] == ["acme customer", "acme-canary"]
        assert {r["tenant_id"] for r in rows} == {"acme"}
    finally:
        scopes.close()


async def test_a_table_lock_is_refused_so_one_tenant_cannot_queue_the_others(scopes: PostgresSqlScopes) -> None:
    acme = scopes.for_tenant("acme")
    for statement in ("LOCK TABLE customers IN ACCESS EXCLUSIVE MODE", "/* x */ lock customers", "  LOCK customers"):
        with pytest.raises(ScopeViolation):
            await acme.execute(statement)
    assert await acme.fetchone("SELECT count(*) AS n FROM customers") is not None  # positive control


async def test_a_statement_is_cancelled_on_the_server_when_its_call_is(
    database: TenantDatabase, scopes: PostgresSqlScopes
) -> None:
    marker = f"tenantry_cancel_probe_{random.randrange(10**9)}"
    with anyio.move_on_after(1.0):
        await scopes.for_tenant("acme").fetch(f"SELECT pg_sleep(20), '{marker}'")
    deadline = anyio.current_time() + 5
    while True:
        with psycopg.connect(database.admin_url) as admin:
            running = admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE %s AND state = 'active'", (f"%{marker}%",)
            ).fetchone()
        if running is not None and running[0] == 0:
            break
        assert anyio.current_time() < deadline, "the statement outlived its call"
        await anyio.sleep(0.2)
    # positive control: the pool still serves both tenants
    assert (await scopes.for_tenant("globex").fetchone("SELECT 1 AS one")) == {"one": 1}
