"""``ctx.sql`` on PostgreSQL: SQL a tool runs observes nothing about rows it cannot read.

The worst case the design must survive: an attacker's SQL reaches the handle, and the tenant
table has a secondary index whose leading column is not ``tenant_id`` (created here by the
database owner outside ``db migrate``, which refuses it). An index scan on such an index
visits every tenant's entries before row-level security filters them out, so anything that
describes the scan — a plan, row counts, statistics, sizes, an engine error raised from
inside the database — is a channel to the rows the policy hides.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from textwrap import dedent

import anyio
import psycopg
import pytest

from tenantry.core.errors import QueryFailed, ScopeViolation
from tenantry.scoping.sql.postgres import PostgresSqlHandle, PostgresSqlScopes
from tests.support.mcp_clients import mcp_client
from tests.support.server import run_cli, start_server
from tests.support.tenant_sql import TenantDatabase, tenant_database

pytestmark = [pytest.mark.postgres, pytest.mark.anyio]

GLOBEX_SECRET = "ceo.private@globex.example"
_REMOVED = re.compile(r"Rows Removed by Filter: (\d+)")
_ALPHABET = sorted(set("abcdefghijklmnopqrstuvwxyz0123456789@.-_"))


@pytest.fixture(scope="module")
def database(postgres_available: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TenantDatabase]:
    with tenant_database(tmp_path_factory.mktemp("pgside") / "data") as db:
        run_cli("db", "migrate", "--owner-url", db.owner_url, "--demo", "--tools-role", db.tools_role,
                data_dir=db.data_dir)  # fmt: skip
        with psycopg.connect(db.owner_url, autocommit=True) as conn:
            # Out of band, as the owner: the index and extended statistics `db migrate` would refuse.
            conn.execute('CREATE INDEX customers_email_c ON tenant_data.customers (email COLLATE "C")')
            conn.execute("CREATE STATISTICS tenant_data.customers_name_email ON name, email FROM tenant_data.customers")
        yield db


@pytest.fixture(scope="module")
def scopes(database: TenantDatabase) -> Iterator[PostgresSqlScopes]:
    scopes = PostgresSqlScopes(database.tools_url, tenant_key=database.tenant_key, pool_max=2)
    yield scopes
    scopes.close()


@pytest.fixture
def seeded(database: TenantDatabase) -> None:
    """Many acme rows make the email index attractive; globex holds the secret. Written as the
    superuser (which bypasses row-level security), then analysed so statistics exist."""
    with psycopg.connect(database.admin_url, autocommit=True) as conn:
        if conn.execute("SELECT count(*) FROM tenant_data.customers").fetchone() == (3002,):
            return
        conn.execute("DELETE FROM tenant_data.customers")
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO tenant_data.customers (tenant_id, name, email) VALUES (%s, %s, %s)",
                [("acme", f"a{i}", f"user{i:05d}@acme.example") for i in range(3000)]
                + [("globex", "Globex CEO", GLOBEX_SECRET), ("globex", "globex-canary", "zz.canary@globex.example")],
            )
        conn.execute("ANALYZE tenant_data.customers")


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _range_query(low: str, high: str) -> str:
    return (
        f'SELECT 1 FROM customers WHERE email COLLATE "C" >= {_literal(low)} AND email COLLATE "C" < {_literal(high)}'
    )


_FORCE = "set_config('enable_seqscan', 'off', true), set_config('enable_bitmapscan', 'off', true)"


def _plan_routes(sql: PostgresSqlHandle) -> list[Callable[[str], object]]:
    """Every way (known to us) a tool's SQL could get at a plan: each returns text or raises."""

    async def direct(query: str) -> object:
        return await sql.fetch(f"/* report */ EXPLAIN (ANALYZE, COSTS OFF) {query}")

    async def xml(query: str) -> object:
        return await sql.fetch(f"SELECT {_FORCE}, query_to_xml({_literal('EXPLAIN ANALYZE ' + query)}, true, true, '')")

    async def do_block(query: str) -> object:
        body = (
            f"DECLARE r text; p text := ''; BEGIN PERFORM {_FORCE};"
            f" FOR r IN EXECUTE {_literal('EXPLAIN ANALYZE ' + query)} LOOP p := p || r; END LOOP;"
            " RAISE EXCEPTION '%', p; END"
        )
        return await sql.execute(f"DO $attack${body}$attack$")

    return [direct, xml, do_block]  # type: ignore[list-item]


async def _hidden_rows(sql: PostgresSqlHandle, low: str, high: str) -> int | None:
    """How many rows the policy hides in [low, high), if any route reveals it; else None."""
    for route in _plan_routes(sql):
        try:
            text = repr(await route(_range_query(low, high)))  # type: ignore[misc]
        except (ScopeViolation, QueryFailed) as exc:
            text = exc.message
        counts = [int(n) for n in _REMOVED.findall(text)]
        if counts:
            return sum(counts)
    return None


async def _read_smallest_hidden_email(sql: PostgresSqlHandle) -> str:
    """The attack from the issue: a prefix search over the plan's counter, one character at a time."""
    prefix = ""
    while len(prefix) < 64:
        if not await _hidden_rows(sql, prefix + _ALPHABET[0], prefix + chr(ord(_ALPHABET[-1]) + 1)):
            return prefix
        lo, hi = 0, len(_ALPHABET) - 1  # the smallest next character with a hidden row below it
        while lo < hi:
            mid = (lo + hi) // 2
            if await _hidden_rows(sql, prefix + _ALPHABET[0], prefix + chr(ord(_ALPHABET[mid]) + 1)):
                hi = mid
            else:
                lo = mid + 1
        prefix += _ALPHABET[lo]
    return prefix


async def test_the_prefix_attack_through_plans_reads_nothing(scopes: PostgresSqlScopes, seeded: None) -> None:
    acme = scopes.for_tenant("acme")
    assert await _hidden_rows(acme, "a", "{") is None
    assert await _read_smallest_hidden_email(acme) == ""
    # Positive control: the same range query, without a plan, runs and sees acme's rows only.
    rows = await acme.fetch(_range_query("user00001", "user00003"))
    assert len(rows) == 2


EXPLAINS = [
    "EXPLAIN SELECT * FROM customers WHERE email = 'x'",
    "explain analyze select * from customers where email > 'c'",
    "explain(analyze) select 1 from customers",
    "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) SELECT 1 FROM customers",
    "  \n\t-- a comment\n  EXPLAIN SELECT 1 FROM customers",
    "/* outer /* nested */ still a comment */ Explain SELECT 1 FROM customers",
    "/**/explain verbose SELECT 1 FROM customers",
]


@pytest.mark.parametrize("statement", EXPLAINS)
async def test_explain_in_any_form_is_refused(scopes: PostgresSqlScopes, seeded: None, statement: str) -> None:
    acme = scopes.for_tenant("acme")
    for method in (acme.fetch, acme.fetchone, acme.execute):
        with pytest.raises(ScopeViolation, match="EXPLAIN"):
            await method(statement)


@pytest.mark.parametrize(
    "statement",
    [
        # Not EXPLAIN: the word in a literal, an identifier or after the first keyword is fine.
        "SELECT 'EXPLAIN' AS word, count(*) AS n FROM customers",
        'SELECT 1 AS "explain" FROM customers LIMIT 1',
        "/* EXPLAIN */ SELECT count(*) AS n FROM customers",
    ],
)
async def test_statements_that_merely_mention_explain_still_run(
    scopes: PostgresSqlScopes, seeded: None, statement: str
) -> None:
    assert await scopes.for_tenant("acme").fetch(statement)


IN_DATABASE_ROUTES = [
    # A DO block forcing the plan and raising it as the error text.
    "DO $$BEGIN PERFORM set_config('enable_seqscan', 'off', true);"
    " RAISE EXCEPTION '%', (SELECT string_agg(x, ' ') FROM (SELECT 1) s, LATERAL (SELECT 'plan') AS t(x)); END$$",
    "DO LANGUAGE plpgsql $$BEGIN NULL; END$$",
    # SQL text run by functions of the database itself.
    "SELECT query_to_xml('EXPLAIN ANALYZE SELECT 1 FROM customers', true, true, '')",
    "SELECT query_to_xmlschema('EXPLAIN SELECT 1 FROM customers', true, true, '')",
    "SELECT query_to_xml_and_xmlschema('EXPLAIN SELECT 1 FROM customers', true, true, '')",
    "SELECT * FROM ts_stat('EXPLAIN ANALYZE SELECT 1 FROM customers')",
    "SELECT * FROM ts_stat('EXPLAIN ANALYZE SELECT 1 FROM customers', 'ab')",
    "SELECT ts_rewrite('a'::tsquery, 'EXPLAIN ANALYZE SELECT 1 FROM customers')",
    # Row counts, pages and sizes over every tenant's rows.
    "SELECT reltuples, relpages FROM pg_class WHERE relname = 'customers'",
    "SELECT relallvisible FROM pg_class WHERE relname = 'customers'",
    "SELECT * FROM pg_class WHERE relname = 'customers'",
    "SELECT pg_relation_size('customers')",
    "SELECT pg_relation_size('customers', 'main')",
    "SELECT pg_table_size('customers')",
    "SELECT pg_total_relation_size('customers')",
    "SELECT pg_indexes_size('customers')",
    "SELECT pg_relation_size('customers_email_c')",
    "SELECT pg_database_size(current_database())",
    "SELECT pg_database_size((SELECT oid FROM pg_database WHERE datname = current_database()))",
    "SELECT pg_tablespace_size('pg_default')",
    "SELECT pg_tablespace_size((SELECT oid FROM pg_tablespace WHERE spcname = 'pg_default'))",
    "SELECT table_to_xml('pg_class', true, true, '')",
    # In-statement clocks that time a scan without network noise.
    "SELECT clock_timestamp()",
    "SELECT timeofday()",
]


@pytest.mark.parametrize("statement", IN_DATABASE_ROUTES)
async def test_in_database_routes_to_plans_counts_and_sizes_are_refused(
    scopes: PostgresSqlScopes, seeded: None, statement: str
) -> None:
    acme = scopes.for_tenant("acme")
    with pytest.raises(ScopeViolation) as refused:
        await acme.fetch(statement)
    assert "globex" not in refused.value.message and "Rows Removed" not in refused.value.message
    # Positive control: the handle still works for ordinary SQL.
    assert await acme.fetchone("SELECT count(*) AS n FROM customers") == {"n": 3000}


async def test_statistics_views_hide_tenant_tables(
    scopes: PostgresSqlScopes, database: TenantDatabase, seeded: None
) -> None:
    with psycopg.connect(database.admin_url) as conn:  # positive control: the statistics exist
        assert conn.execute("SELECT count(*) FROM pg_stats WHERE tablename = 'customers'").fetchone() != (0,)
        assert conn.execute("SELECT count(*) FROM pg_stats_ext WHERE tablename = 'customers'").fetchone() != (0,)
    acme = scopes.for_tenant("acme")
    assert await acme.fetch("SELECT attname, n_distinct, most_common_vals::text FROM pg_stats"
                            " WHERE tablename = 'customers'") == []  # fmt: skip
    assert await acme.fetch("SELECT * FROM pg_stats_ext WHERE tablename = 'customers'") == []
    assert await acme.fetch("SELECT * FROM pg_stats_ext_exprs WHERE tablename = 'customers'") == []
    with pytest.raises(ScopeViolation):
        await acme.fetch("SELECT * FROM pg_statistic")
    with pytest.raises(ScopeViolation):
        await acme.fetch("SELECT * FROM pg_statistic_ext_data")


async def test_catalog_introspection_without_counts_still_works(scopes: PostgresSqlScopes, seeded: None) -> None:
    acme = scopes.for_tenant("acme")
    rows = await acme.fetch(
        "SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'tenant_data' AND c.relkind = 'r' ORDER BY 1"
    )
    assert [r["relname"] for r in rows] == ["customers", "forecasts", "outbox"]
    columns = await acme.fetch(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'outbox' ORDER BY ordinal_position"
    )
    assert [c["column_name"] for c in columns][:2] == ["tenant_id", "id"]
    assert await acme.fetchone("SELECT now() <= now() AS ok, pg_column_size('abc'::text) AS size") == {
        "ok": True,
        "size": 7,
    }


@pytest.mark.parametrize(
    ("statement", "code"),
    [
        ("SELECT email::int FROM customers", "SQL error 22P02 (invalid_text_representation)"),
        ("SELECT name::regclass FROM customers", "SQL error 42P01 (undefined_table)"),
        ("SELECT email::regclass FROM customers", "SQL error 3F000 (invalid_schema_name)"),
        ("SELECT name::regtype FROM customers", "SQL error 42704 (undefined_object)"),
        ("SELECT email::jsonpath FROM customers", "SQL error 42601 (syntax_error)"),
        ("SELECT 1 / (length(email) - length(email)) FROM customers", "SQL error 22012 (division_by_zero)"),
        ("INSERT INTO forecasts (quarter, note) VALUES ('Q1', 'x'), ('Q1', 'y')", "SQL error 23505 (unique_violation)"),
    ],
)
async def test_engine_error_text_that_can_carry_values_is_not_echoed(
    scopes: PostgresSqlScopes, seeded: None, statement: str, code: str
) -> None:
    with pytest.raises(QueryFailed) as failed:
        await scopes.for_tenant("acme").execute(statement)
    assert failed.value.message == code
    assert "acme.example" not in failed.value.message and "a0" not in failed.value.message


@pytest.mark.parametrize(
    ("statement", "message"),
    [
        ("SELEC name FROM customers", 'syntax error at or near "SELEC"'),
        ("SELECT nope FROM customers", 'column "nope" does not exist'),
        ("SELECT 1 FROM nowhere", 'relation "nowhere" does not exist'),
        ("SELECT no_such_function(1)", "function no_such_function(integer) does not exist"),
    ],
)
async def test_errors_about_the_statement_itself_keep_their_message(
    scopes: PostgresSqlScopes, seeded: None, statement: str, message: str
) -> None:
    with pytest.raises(QueryFailed) as failed:
        await scopes.for_tenant("acme").fetch(statement)
    assert message in failed.value.message


@pytest.fixture(scope="module")
def clean_database(postgres_available: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TenantDatabase]:
    """A database whose tenant tables keep every rule (the one above has a planted index)."""
    with tenant_database(tmp_path_factory.mktemp("pgclean") / "data") as db:
        run_cli("db", "migrate", "--owner-url", db.owner_url, "--demo", data_dir=db.data_dir)
        yield db


def _migrate(database: TenantDatabase, tmp_path: Path, schema_sql: str) -> tuple[int, str, str]:
    script = tmp_path / "schema.sql"
    script.write_text(schema_sql)
    result = run_cli("db", "migrate", "--owner-url", database.owner_url, str(script), data_dir=database.data_dir,
                     check=False)  # fmt: skip
    return result.returncode, result.stdout, result.stderr


@pytest.mark.parametrize(
    ("schema_sql", "index", "table"),
    [
        ("CREATE TABLE people (tenant_id text NOT NULL, email text); CREATE INDEX people_email ON people (email);",
         "people_email", "people"),
        ("CREATE TABLE people2 (tenant_id text NOT NULL, email text);"
         " CREATE INDEX people2_lower ON people2 (lower(email), tenant_id);", "people2_lower", "people2"),
        ("CREATE TABLE people3 (tenant_id text NOT NULL, id int, PRIMARY KEY (id, tenant_id));",
         "people3_pkey", "people3"),
        ("CREATE TABLE people4 (tenant_id text NOT NULL, email text);"
         " CREATE INDEX people4_email ON people4 (email, tenant_id);", "people4_email", "people4"),
        ("CREATE TABLE people5 (tenant_id text NOT NULL, email text);"
         " CREATE INDEX people5_email ON people5 USING hash (email);", "people5_email", "people5"),
    ],
    ids=["secondary", "expression", "primary-key", "tenant-second", "hash"],
)  # fmt: skip
def test_migrate_refuses_an_index_that_does_not_lead_with_tenant_id(
    clean_database: TenantDatabase, tmp_path: Path, schema_sql: str, index: str, table: str
) -> None:
    code, _, stderr = _migrate(clean_database, tmp_path, schema_sql)
    assert code == 2  # a usage error: the schema breaks a rule
    assert f"index {index} on tenant_data.{table} must lead with tenant_id" in stderr
    assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr
    with psycopg.connect(clean_database.admin_url) as conn:  # nothing of the refused script stayed
        assert conn.execute("SELECT to_regclass(%s)", (f"tenant_data.{table}",)).fetchone() == (None,)


async def test_migrate_accepts_an_index_that_leads_with_tenant_id(
    clean_database: TenantDatabase, tmp_path: Path
) -> None:
    code, stdout, stderr = _migrate(
        clean_database,
        tmp_path,
        "CREATE TABLE contacts (tenant_id text NOT NULL, id bigint GENERATED BY DEFAULT AS IDENTITY, email text,"
        " PRIMARY KEY (tenant_id, id));"
        " CREATE INDEX contacts_email ON contacts (tenant_id, email);"
        " CREATE INDEX contacts_lower ON contacts (tenant_id, lower(email));",
    )
    assert code == 0, stderr
    assert "contacts" in stdout
    scopes = PostgresSqlScopes(clean_database.tools_url, tenant_key=clean_database.tenant_key, pool_max=1)
    try:
        acme = scopes.for_tenant("acme")
        await acme.execute("INSERT INTO contacts (email) VALUES (?)", "Someone@acme.example")
        await scopes.for_tenant("globex").execute("INSERT INTO contacts (email) VALUES (?)", "Someone@globex.example")
        rows = await acme.fetch("SELECT email FROM contacts WHERE lower(email) LIKE ?", "someone@%")
        assert rows == [{"email": "Someone@acme.example"}]
    finally:
        scopes.close()


def test_migrate_refuses_a_database_with_a_planted_index(database: TenantDatabase, tmp_path: Path) -> None:
    """An index added out of band is found the next time `db migrate` runs (it checks every table)."""
    code, _, stderr = _migrate(database, tmp_path, "SELECT 1;")
    assert code == 2 and "index customers_email_c on tenant_data.customers must lead with tenant_id" in stderr


SQL_TOOL = dedent(
    """
    import tenantry

    app = tenantry.App("sql-console")

    @app.tool()
    async def run_sql(ctx: tenantry.ToolContext, query: str) -> list:
        \"\"\"Run any SQL the agent writes (the worst case: injection is the design).\"\"\"
        return await ctx.sql.fetch(query)
    """
)


async def test_a_tool_running_an_attackers_sql_gets_no_plan_and_no_values_in_errors(
    database: TenantDatabase, seeded: None, tmp_path: Path
) -> None:
    (tmp_path / "sql_console.py").write_text(SQL_TOOL)
    config = tmp_path / "tenantry.toml"
    config.write_text(f'[sql]\nurl = "{database.tools_url}"\n')
    data_dir = tmp_path / "server-data"
    (data_dir / "keys").mkdir(parents=True, mode=0o700)
    data_dir.chmod(0o700)
    (data_dir / "keys" / "sql-tenant.key").write_bytes(database.tenant_key)
    (data_dir / "keys" / "sql-tenant.key").chmod(0o600)
    server = start_server(data_dir, demo=False, app="sql_console:app", config=config, cwd=tmp_path)
    try:
        server.cli("tenant", "create", "acme", "--tools", "run_sql", "--config", str(config))
        await anyio.sleep(0.6)  # the running server's next control-plane poll
        async with mcp_client(server.mcp_url, server.token("acme")) as client:

            async def run(query: str) -> tuple[bool, str]:
                result = await client.call_tool("run_sql", {"query": query})
                body = json.dumps([c.model_dump() for c in result.content]) + json.dumps(result.structured_content)
                return result.is_error, body

            attacks = [
                "EXPLAIN (ANALYZE) " + _range_query("ceo", "cep"),
                "/* x */ explain(analyze) " + _range_query("ceo", "cep"),
                "SELECT query_to_xml('EXPLAIN ANALYZE SELECT 1 FROM customers', true, true, '')",
                "DO $$BEGIN RAISE EXCEPTION '%', (SELECT count(*) FROM customers); END$$",
                "SELECT reltuples FROM pg_class WHERE relname = 'customers'",
                "SELECT email::int FROM customers",
            ]
            for attack in attacks:
                failed, body = await run(attack)
                assert failed, attack
                for leak in ("Rows Removed", "globex", "ceo.private", "acme.example"):
                    assert leak not in body, (attack, body)
            assert "SQL error 22P02 (invalid_text_representation)" in body
            # Positive control: the same tool answers ordinary SQL over acme's rows.
            failed, body = await run("SELECT count(*) AS n FROM customers")
            assert not failed and '"n": 3000' in body
    finally:
        server.stop()
