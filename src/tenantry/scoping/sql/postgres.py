"""``ctx.sql`` on PostgreSQL: shared tables under row-level security, one pooled transaction per call.

See :mod:`tenantry.scoping.sql.pg_schema` for how the database verifies the tenant of each
transaction. The handle's side: every statement runs in its own transaction that starts with
the tenant's proof (``set_config(..., true)``, so it dies with the transaction), pipelined with
the statement itself in one round trip; the extended query protocol is always used, so one call
can never smuggle a second statement (``...; COMMIT; ...``) into the text.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal, TypeVar

import psycopg
import psycopg.errors
from psycopg import Pipeline
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from tenantry.core.errors import QueryFailed, ScopeViolation, StorageError, UsageError, driver_error_text
from tenantry.core.ids import validate_tenant_id
from tenantry.scoping.sql.base import SqlValue
from tenantry.scoping.sql.pg_schema import TenantProof, tenant_schema_name
from tenantry.scoping.sql.placeholders import qmark_to_pyformat
from tenantry.scoping.threads import Interrupt, ThreadBulkheads, default_bulkheads

__all__ = ["PostgresSqlScopes", "PostgresSqlHandle"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")
_Conn = psycopg.Connection[dict[str, Any]]
_Cursor = psycopg.Cursor[dict[str, Any]]
_Work = Callable[[_Cursor, Pipeline], _T]

_ENTER = (
    "SELECT pg_catalog.set_config('tenantry.tenant_id', %s, true),"
    " pg_catalog.set_config('tenantry.tenant_proof', %s, true)"
)
_ENTER_SCHEMA = _ENTER + ", pg_catalog.set_config('search_path', %s, true)"
# Statements that leave state in the session beyond settings (WITH HOLD cursors, LISTEN, prepared
# statements). After such a call the connection is closed instead of returned to the pool; so is
# a connection whose call failed. Session-level settings a call made by any means (escaped
# identifiers, dynamic SQL) are undone by the RESET ALL that follows every transaction.
_WORD = re.compile(r"[A-Za-z_]+")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
# Errors raised while parsing the tool's own statement: their text quotes only that statement
# and the catalog.
_ECHOED_CLASSES = ("42", "0A")
_SESSION_STATE = re.compile(
    r"\b(?:set|reset|discard|deallocate|declare|listen|prepare|do|execute|load|copy)\b|set_config|advisory",
    re.IGNORECASE,
)


class PostgresSqlScopes:
    """One connection pool for every tenant; handles are cheap views of it."""

    dialect: Literal["postgresql"] = "postgresql"

    def __init__(
        self,
        url: str,
        *,
        tenant_key: bytes,
        isolation: Literal["rls", "schema"] = "rls",
        schema_name: str = "tenant_data",
        pool_min: int = 1,
        pool_max: int = 10,
        pool_timeout: float = 5.0,
        statement_timeout: int = 30,
        row_limit: int = 10_000,
        bulkheads: ThreadBulkheads | None = None,
    ) -> None:
        self._proof = TenantProof(tenant_key)
        self.bulkheads = bulkheads or default_bulkheads()
        self._isolation = isolation
        self._schema_name = schema_name
        self._statement_timeout = f"{statement_timeout}s"
        self._timeout = pool_timeout
        self.row_limit = row_limit
        # Session defaults travel in the startup packet.
        # A row lock wait is bounded too: one tenant's open transaction must not hold another's
        # statement for the whole statement_timeout.
        options = f"-c statement_timeout={statement_timeout}s -c lock_timeout={min(statement_timeout, 5)}s"
        if isolation == "rls":
            options += f" -c search_path={schema_name}"
        self._pool: ConnectionPool[_Conn] = ConnectionPool(
            url,
            min_size=pool_min,
            max_size=max(pool_max, pool_min, 1),
            kwargs={
                "autocommit": True,  # every transaction is an explicit conn.transaction()
                "row_factory": dict_row,
                "connect_timeout": 5,
                "options": options,
            },
            open=False,
            name="tenantry-sql",
        )
        self._opened = False

    def for_tenant(self, tenant_id: str) -> PostgresSqlHandle:
        validate_tenant_id(tenant_id)
        return PostgresSqlHandle(self, tenant_id)

    def search_path(self, tenant_id: str) -> str:
        if self._isolation == "schema":
            return f'"{tenant_schema_name(self._schema_name, tenant_id)}"'
        return f'"{self._schema_name}"'

    def run(self, tenant_id: str, work: _Work[_T], *, discard: bool = True, interrupt: Interrupt | None = None) -> _T:
        """Run ``work`` in one transaction of ``tenant_id`` (worker thread); ``discard`` closes
        the connection afterwards, ending any session state the statement may have left.

        :param interrupt: set when the calling tool call is cancelled (its deadline, a halt): the
            running statement is cancelled on the server, so it does not outlive the call.
        """
        if not self._opened:
            self._pool.open(wait=False)
            self._opened = True
        try:
            with self._pool.connection(timeout=self._timeout) as conn:
                canceller = _Canceller(conn)
                if interrupt is not None:
                    if interrupt.is_set():
                        raise QueryFailed("SQL statement cancelled: the call was cancelled")
                    interrupt.on_set(canceller.cancel_soon)
                try:
                    result = self._transaction(conn, tenant_id, work)
                except BaseException:
                    canceller.disarm()
                    conn.close()  # whatever the failed call left in the session ends with it
                    raise
                canceller.disarm()  # before the connection can serve another tenant
                if discard:
                    conn.close()  # the pool replaces a closed connection
                return result
        except PoolTimeout:
            raise StorageError("the tenant database is busy or unreachable; try again") from None
        except psycopg.errors.InsufficientPrivilege:
            raise ScopeViolation("this SQL statement is not allowed in a tenant database") from None
        except psycopg.errors.QueryCanceled:
            raise QueryFailed(f"SQL statement exceeded the {self._statement_timeout} time limit") from None
        except psycopg.errors.InvalidSchemaName as exc:
            if self._isolation != "schema":
                raise _query_failed(exc) from None
            raise StorageError("the tenant's schema does not exist; run `tenantry db migrate`") from None
        except (psycopg.OperationalError, psycopg.errors.AdminShutdown) as exc:
            raise StorageError(f"the tenant database is unavailable: {driver_error_text(exc)}") from None
        except psycopg.Error as exc:
            raise _query_failed(exc) from None

    def _transaction(self, conn: _Conn, tenant_id: str, work: _Work[_T]) -> _T:
        proof = self._proof.for_backend(tenant_id, conn.info.backend_pid)
        with conn.pipeline() as pipeline:
            with conn.transaction():
                if self._isolation == "schema":
                    conn.execute(_ENTER_SCHEMA, (tenant_id, proof, self.search_path(tenant_id)))
                else:
                    conn.execute(_ENTER, (tenant_id, proof))
                with conn.cursor() as cur:
                    result = work(cur, pipeline)
            # Session-level settings the call made by any means (escaped identifiers, dynamic SQL)
            # end here, before the next tenant's BEGIN; pipelined with COMMIT, no extra round trip.
            conn.execute("RESET ALL")
        return result

    def check(self) -> None:
        """Prove the database accepts this server's tenant proof and enforces it.

        :raises StorageError: unreachable, schema missing, or a key that does not match the database's.
        """
        probe = "tenantry-probe"

        def verified(cur: _Cursor, _: Pipeline) -> Any:
            cur.execute(
                "SELECT tenantry_rls.current_tenant() AS tenant, r.rolsuper OR r.rolbypassrls AS bypass"
                " FROM pg_roles r WHERE r.rolname = current_user"
            )
            return cur.fetchone()

        try:
            row = self.run(probe, verified)
        except (QueryFailed, ScopeViolation) as exc:
            raise StorageError(f"the tenant database is not prepared ({exc.message}); run `tenantry db init`") from None
        if row is None or row["tenant"] != probe:
            raise StorageError(
                "the database does not accept this server's SQL tenant key: run `tenantry db init` with this"
                " data dir, or set sql.tenant_key to the key it installed"
            )
        if row["bypass"]:
            raise StorageError(
                "sql.url connects as a superuser or BYPASSRLS role, which ignores row-level security;"
                " connect as the tools role made by `tenantry db init`"
            )

    def close(self) -> None:
        if self._opened:
            self._pool.close()
            self._opened = False


class PostgresSqlHandle:
    """``ctx.sql`` on PostgreSQL. See :class:`~tenantry.scoping.sql.base.SqlHandle`.

    Each method is one transaction. PostgreSQL's jsonb ``?`` operators must be written as
    ``jsonb_exists(...)`` since ``?`` is the placeholder.
    """

    dialect: Literal["postgresql"] = "postgresql"

    def __init__(self, scopes: PostgresSqlScopes, tenant_id: str) -> None:
        self._scopes = scopes
        self._tenant_id = tenant_id

    async def fetch(self, sql: str, *params: SqlValue) -> list[dict[str, Any]]:
        query = _prepare(sql, params)
        limit = self._scopes.row_limit

        def work(cur: _Cursor, _: Pipeline) -> list[dict[str, Any]]:
            cur.execute(query, params)
            rows = cur.fetchmany(limit + 1)
            if len(rows) > limit:
                raise UsageError(f"query returned more than {limit} rows; add a LIMIT")
            return rows

        return await self._run(work, sql)

    async def fetchone(self, sql: str, *params: SqlValue) -> dict[str, Any] | None:
        query = _prepare(sql, params)

        def work(cur: _Cursor, pipeline: Pipeline) -> dict[str, Any] | None:
            cur.execute(query, params)
            pipeline.sync()
            return cur.fetchone() if cur.description is not None else None

        return await self._run(work, sql)

    async def execute(self, sql: str, *params: SqlValue) -> int:
        query = _prepare(sql, params)

        def work(cur: _Cursor, pipeline: Pipeline) -> int:
            cur.execute(query, params)
            pipeline.sync()
            return cur.rowcount

        return await self._run(work, sql)

    async def executemany(self, sql: str, rows: Iterable[Sequence[SqlValue]]) -> int:
        materialised = [tuple(row) for row in rows]
        query = _prepare(sql, materialised[0] if materialised else ())

        def work(cur: _Cursor, pipeline: Pipeline) -> int:
            cur.executemany(query, materialised)
            pipeline.sync()
            return cur.rowcount

        return await self._run(work, sql)

    async def _run(self, work: _Work[_T], sql: str) -> _T:
        discard = _SESSION_STATE.search(sql) is not None
        interrupt = Interrupt()
        return await self._scopes.bulkheads.run(
            lambda: self._scopes.run(self._tenant_id, work, discard=discard, interrupt=interrupt),
            tenant_id=self._tenant_id,
            interrupt=interrupt,
        )


class _Canceller:
    """Cancels one call's statement on the server, and never anything after the call ended: a
    cancel in progress holds the lock that :meth:`disarm` takes before the connection is reused."""

    def __init__(self, conn: _Conn) -> None:
        self._conn = conn
        self._lock = threading.Lock()
        self._armed = True

    def cancel_soon(self) -> None:
        # Called on the event loop: cancelling is a network round trip, so it runs in a thread.
        threading.Thread(target=self._cancel, name="tenantry-sql-cancel", daemon=True).start()

    def _cancel(self) -> None:
        with self._lock:
            if not self._armed:
                return
            try:
                self._conn.cancel_safe(timeout=5.0)
            except Exception:  # the statement may have finished, or the server be gone
                logger.debug("cancelling a tool's statement failed", exc_info=True)

    def disarm(self) -> None:
        with self._lock:
            self._armed = False


def _prepare(sql: str, params: Sequence[SqlValue]) -> str:
    first = _first_keyword(sql)
    if first == "explain":
        # Row-level security filters rows after the scan, and the planner's estimates come from
        # statistics over every tenant: any plan (estimated or ANALYZEd) describes hidden rows.
        raise ScopeViolation("EXPLAIN is not allowed in tool SQL: a plan describes other tenants' rows")
    if first == "lock":
        # A table lock is taken on the whole shared table: every other tenant's statement would
        # queue behind it (and behind a lock request that is itself waiting).
        raise ScopeViolation("LOCK is not allowed in tool SQL: tables are shared by every tenant")
    query, count = qmark_to_pyformat(sql)
    if count != len(params):
        raise UsageError(f"the SQL has {count} placeholders but {len(params)} values were given")
    return query


def _first_keyword(sql: str) -> str:
    """The statement's first word as PostgreSQL reads it: after whitespace, ``--`` comments and
    (nested) ``/* */`` comments; lowercased."""
    i, n = 0, len(sql)
    while i < n:
        if sql[i].isspace():
            i += 1
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end < 0 else end + 1
        elif sql.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if sql.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif sql.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        else:
            break
    word = _WORD.match(sql, i)
    return word.group(0).lower() if word else ""


def _query_failed(exc: psycopg.Error) -> QueryFailed:
    """The error a tool sees for a failed statement.

    The engine's text is echoed only for errors found while parsing the tool's own statement
    (SQLSTATE classes 42 and 0A with a position in the statement: syntax, unknown column or
    table...), which quote that statement and the catalog. Anything raised while executing it
    — data exceptions, constraint violations, errors raised from code in the database — can
    carry values, so the tool gets the SQLSTATE and its condition name; the full text is
    logged at DEBUG.
    """
    diag = exc.diag
    state = diag.sqlstate or ""
    primary = diag.message_primary
    if primary and diag.statement_position and state[:2] in _ECHOED_CLASSES:
        return QueryFailed(f"SQL error: {primary}")
    logger.debug("tool SQL failed with SQLSTATE %s: %s", state or "-", primary or driver_error_text(exc))
    if not state:
        return QueryFailed("SQL error")
    if getattr(type(exc), "sqlstate", None) == state:
        return QueryFailed(f"SQL error {state} ({_CAMEL.sub('_', type(exc).__name__).lower()})")
    return QueryFailed(f"SQL error {state}")
