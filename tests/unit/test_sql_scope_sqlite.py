"""The embedded SQL handle: one database per tenant, and no statement can leave it."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import anyio
import pytest

from tenantry.core.errors import QueryFailed, ScopeViolation, UsageError
from tenantry.core.limits import TenantLimits
from tenantry.framework.deadline import DeadlineExceeded, DeadlineWatch
from tenantry.scoping.sql.sqlite import SqliteSqlScopes
from tenantry.scoping.threads import ThreadBulkheads

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


# -- statement time limit ---------------------------------------------------------------------

ENDLESS = "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n+1 FROM r) SELECT count(*) FROM r"


def timed_scopes(tmp_path: Path, seconds: float) -> SqliteSqlScopes:
    limits = replace(TenantLimits(), sql_statement_timeout=seconds)
    return SqliteSqlScopes(tmp_path, bulkheads=ThreadBulkheads(lambda _tenant_id: limits))


async def test_an_endless_recursive_query_is_stopped_at_the_statement_time_limit(tmp_path: Path) -> None:
    scopes = timed_scopes(tmp_path, 0.5)
    sql = scopes.for_tenant("acme")
    started = time.monotonic()
    with pytest.raises(QueryFailed, match=r"stopped after the 0\.5 s limit \(sql_statement_timeout\)"):
        await sql.fetchone(ENDLESS)
    assert time.monotonic() - started < 2.0
    # Positive control: the same connection answers the next statement.
    assert await sql.fetchone("SELECT 41 + 1 AS answer") == {"answer": 42}
    scopes.close()


async def test_a_statement_within_its_time_limit_completes(tmp_path: Path) -> None:
    scopes = timed_scopes(tmp_path, 5)
    bounded = (
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n+1 FROM r WHERE n < 100000) SELECT count(*) AS c FROM r"
    )
    assert await scopes.for_tenant("acme").fetchone(bounded) == {"c": 100000}
    scopes.close()


async def test_an_aborted_batch_rolls_back_and_leaves_the_connection_usable(tmp_path: Path) -> None:
    scopes = timed_scopes(tmp_path, 0.3)
    sql = scopes.for_tenant("acme")
    await sql.execute("CREATE TABLE t (n INTEGER)")
    slow_insert = (
        "INSERT INTO t SELECT ? + (SELECT count(*) FROM ("
        + ENDLESS.removesuffix(" SELECT count(*) FROM r")
        + " SELECT n FROM r))"
    )
    with pytest.raises(QueryFailed, match="sql_statement_timeout"):
        await sql.executemany(slow_insert, [(1,), (2,)])
    assert await sql.fetchone("SELECT count(*) AS c FROM t") == {"c": 0}
    await sql.executemany("INSERT INTO t VALUES (?)", [(1,), (2,)])
    assert await sql.fetchone("SELECT count(*) AS c FROM t") == {"c": 2}
    scopes.close()


async def test_other_tenants_queries_are_served_while_one_runs_an_endless_query(tmp_path: Path) -> None:
    scopes = timed_scopes(tmp_path, 2.0)
    slowest = 0.0
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: _expect_timeout(scopes))
        await anyio.sleep(0.1)
        other = scopes.for_tenant("globex")
        for _ in range(20):
            started = time.monotonic()
            assert await other.fetchone("SELECT 1 AS one") == {"one": 1}
            slowest = max(slowest, time.monotonic() - started)
            await anyio.sleep(0.02)
    assert slowest < 0.25
    scopes.close()


async def _expect_timeout(scopes: SqliteSqlScopes) -> None:
    with pytest.raises(QueryFailed):
        await scopes.for_tenant("acme").fetchone(ENDLESS)


async def test_a_cancelled_call_stops_its_statement_and_frees_the_thread(tmp_path: Path) -> None:
    scopes = timed_scopes(tmp_path, 60)  # far beyond the test: only the cancellation can stop it
    heads = scopes.bulkheads
    with anyio.move_on_after(0.3):
        await scopes.for_tenant("acme").fetchone(ENDLESS)
    started = time.monotonic()
    while heads.busy_threads("acme"):
        assert time.monotonic() - started < 1.0, "the statement went on after its caller was cancelled"
        await anyio.sleep(0.01)
    assert await scopes.for_tenant("acme").fetchone("SELECT 1 AS one") == {"one": 1}
    scopes.close()


async def test_the_dispatcher_deadline_cancellation_stops_the_statement(tmp_path: Path) -> None:
    """The dispatcher cancels overdue calls with a plain ``Task.cancel`` (DeadlineWatch)."""
    scopes = timed_scopes(tmp_path, 60)
    watch = DeadlineWatch(granularity=0.05)
    with pytest.raises(DeadlineExceeded):
        await watch.run(scopes.for_tenant("acme").fetchone(ENDLESS), 0.3)
    started = time.monotonic()
    while scopes.bulkheads.busy_threads("acme"):
        assert time.monotonic() - started < 1.0, "the statement went on after its deadline"
        await anyio.sleep(0.01)
    scopes.close()


def quota_scopes(tmp_path: Path, limits: dict[str, TenantLimits]) -> SqliteSqlScopes:
    """Each tenant's ``sql_bytes`` read from ``limits`` at every statement (it may change meanwhile)."""
    return SqliteSqlScopes(tmp_path, bulkheads=ThreadBulkheads(lambda tenant_id: limits[tenant_id]))


async def fill(sql: object, rows: int) -> int:
    written = 0
    for _ in range(rows):
        await sql.execute("INSERT INTO blobs VALUES (?)", "x" * 5000)  # type: ignore[attr-defined]
        written += 1
    return written


async def test_a_tenant_database_stops_growing_at_its_sql_bytes_and_another_tenant_does_not(tmp_path: Path) -> None:
    from tenantry.core.errors import StorageQuotaExceeded

    limits = {"acme": replace(TenantLimits(), sql_bytes=200_000), "globex": replace(TenantLimits(), sql_bytes=10**7)}
    scopes = quota_scopes(tmp_path, limits)
    acme, globex = scopes.for_tenant("acme"), scopes.for_tenant("globex")
    for sql in (acme, globex):
        await sql.execute("CREATE TABLE blobs (body TEXT)")
    with pytest.raises(StorageQuotaExceeded, match=r"at its 200000 byte limit \(sql_bytes\); delete rows first"):
        await fill(acme, 100)
    stored = (await acme.fetchone("SELECT count(*) AS n FROM blobs"))["n"]  # type: ignore[index]
    assert 20 <= stored < 40  # about 200 kB of 5 kB rows, never more
    assert await fill(globex, 100) == 100  # the control: the other tenant's own quota
    with pytest.raises(StorageQuotaExceeded):  # a batch is refused whole
        await acme.executemany("INSERT INTO blobs VALUES (?)", [("y" * 5000,)] * 10)
    assert (await acme.fetchone("SELECT count(*) AS n FROM blobs"))["n"] == stored  # type: ignore[index]
    await acme.execute("DELETE FROM blobs WHERE rowid % 2 = 0")  # deleting makes room again
    assert await fill(acme, 5) == 5
    limits["acme"] = replace(limits["acme"], sql_bytes=2_000_000)  # a raised quota applies at once
    assert await fill(acme, 100) == 100
    scopes.close()


async def test_a_tool_cannot_raise_its_own_page_limit(scopes: SqliteSqlScopes) -> None:
    with pytest.raises(ScopeViolation):
        await scopes.for_tenant("acme").execute("PRAGMA max_page_count = 4294967294")


@pytest.mark.parametrize(
    "statement",
    [
        "CREATE TEMP TABLE spill AS SELECT zeroblob(1000000) AS b",
        "CREATE TEMPORARY TABLE spill (b BLOB)",
        "CREATE TABLE temp.spill (b BLOB)",
        "CREATE TABLE TEMP.spill AS SELECT 1 AS x",
        "CREATE VIEW temp.v AS SELECT 1",
        "CREATE TEMP VIEW v AS SELECT 1",
        "CREATE TEMP TRIGGER t AFTER INSERT ON notes BEGIN SELECT 1; END",
    ],
)
async def test_a_tool_cannot_create_temp_objects_outside_the_sql_bytes_quota(
    scopes: SqliteSqlScopes, statement: str
) -> None:
    acme = scopes.for_tenant("acme")
    await acme.execute("CREATE TABLE IF NOT EXISTS notes (body TEXT)")
    with pytest.raises(ScopeViolation):
        await acme.execute(statement)


async def test_main_schema_objects_are_still_allowed_beside_the_temp_refusal(scopes: SqliteSqlScopes) -> None:
    acme = scopes.for_tenant("acme")
    await acme.execute("CREATE TABLE notes (body TEXT)")
    await acme.execute("CREATE INDEX notes_body ON notes (body)")
    await acme.execute("CREATE VIEW bodies AS SELECT body FROM notes")
    await acme.execute("CREATE TRIGGER t AFTER INSERT ON notes BEGIN SELECT 1; END")
    await acme.execute("INSERT INTO notes VALUES ('kept')")
    assert await acme.fetch("SELECT body FROM bodies") == [{"body": "kept"}]


@pytest.mark.parametrize("opener", ["BEGIN", "BEGIN IMMEDIATE", "SAVEPOINT held"])
async def test_a_transaction_a_call_leaves_open_is_rolled_back_before_the_next_call(
    scopes: SqliteSqlScopes, opener: str, tmp_path: Path
) -> None:
    import sqlite3

    acme = scopes.for_tenant("acme")
    await acme.execute("CREATE TABLE notes (body TEXT)")
    with pytest.raises(UsageError, match=r"cannot outlive its ctx\.sql call"):
        await acme.execute(opener)
    await acme.execute("INSERT INTO notes VALUES ('committed')")  # its own transaction, committed at once
    other = sqlite3.connect(tmp_path / "tenants" / "acme" / "data.sqlite3", timeout=1)
    try:
        assert other.execute("SELECT body FROM notes").fetchall() == [("committed",)]
        other.execute("INSERT INTO notes VALUES ('other process')")  # not locked out
        other.commit()
    finally:
        other.close()
    assert await acme.executemany("INSERT INTO notes VALUES (?)", [("a",), ("b",)]) == 2


async def test_a_call_within_one_statement_still_commits_its_writes(scopes: SqliteSqlScopes) -> None:
    acme = scopes.for_tenant("acme")
    await acme.execute("CREATE TABLE notes (body TEXT)")
    assert await acme.execute("INSERT INTO notes VALUES ('x')") == 1
    assert await acme.fetchone("SELECT count(*) AS n FROM notes") == {"n": 1}


async def test_the_wal_file_does_not_keep_a_second_copy_of_a_database_at_its_sql_bytes(tmp_path: Path) -> None:
    from tenantry.core.errors import StorageQuotaExceeded
    from tenantry.scoping.page_quota import WAL_SIZE_LIMIT

    limits = {"acme": replace(TenantLimits(), sql_bytes=12_000_000)}
    scopes = quota_scopes(tmp_path, limits)
    acme = scopes.for_tenant("acme")
    await acme.execute("CREATE TABLE blobs (body BLOB)")
    with pytest.raises(StorageQuotaExceeded):
        for _ in range(1000):
            await acme.execute("INSERT INTO blobs SELECT randomblob(30000)")
    wal = tmp_path / "tenants" / "acme" / "data.sqlite3-wal"
    await acme.execute("UPDATE blobs SET body = randomblob(30000)")  # every page again, in one statement
    assert wal.stat().st_size > 10_000_000  # the control: that statement's WAL holds a second copy
    await acme.execute("UPDATE blobs SET body = randomblob(30000) WHERE rowid = 1")
    assert wal.stat().st_size <= WAL_SIZE_LIMIT + 8192  # truncated after the checkpoint
    scopes.close()
