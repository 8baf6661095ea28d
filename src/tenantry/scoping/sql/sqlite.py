"""Embedded SQL: one SQLite database file per tenant, behind an authorizer.

Isolation is physical (each tenant's rows live in its own file) and the authorizer keeps
a statement inside that file: ``ATTACH``/``DETACH``, ``VACUUM INTO``, extension loading
and engine-altering pragmas are refused, whatever SQL a tool (or an injected argument)
manages to run.

Every statement runs under a progress handler that aborts it once the tenant's
``sql_statement_timeout`` has passed, or as soon as the calling tool call is cancelled (its
deadline passed, the tenant was halted): a recursive CTE cannot run for ever, and a worker thread
does not go on computing for a caller that has left. The connection stays usable afterwards.
"""

from __future__ import annotations

import math
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

from tenantry.core.errors import QueryFailed, ScopeViolation, StorageError, StorageQuotaExceeded, UsageError
from tenantry.core.ids import validate_tenant_id
from tenantry.scoping.open_files import OpenPerTenant
from tenantry.scoping.page_quota import WAL_SIZE_LIMIT, full_means_quota, page_limit
from tenantry.scoping.sql.base import SqlValue
from tenantry.scoping.threads import Interrupt, ThreadBulkheads, default_bulkheads

__all__ = ["SqliteSqlScopes", "SqliteSqlHandle", "tenant_database_path"]

_T = TypeVar("_T")

# Introspection only; everything else (journal_mode, writable_schema, trusted_schema, ...) is refused.
_READ_ONLY_PRAGMAS = frozenset(
    {"table_info", "table_xinfo", "table_list", "index_list", "index_info", "index_xinfo", "foreign_key_list"}
)
_FORBIDDEN_FUNCTIONS = frozenset({"load_extension", "fts3_tokenizer", "readfile", "writefile", "edit", "zipfile"})
_FORBIDDEN_TABLES = frozenset({"sqlite_dbpage", "zipfile", "fsdir"})
# The temp schema lives in a file of its own under the server's temp directory, outside the
# tenant's directory and its ``sql_bytes`` quota, for as long as the connection stays open (across
# calls): refused, like TEMPORARY on PostgreSQL.
_TEMP_OBJECTS = frozenset(
    {
        sqlite3.SQLITE_CREATE_TEMP_TABLE,
        sqlite3.SQLITE_CREATE_TEMP_INDEX,
        sqlite3.SQLITE_CREATE_TEMP_TRIGGER,
        sqlite3.SQLITE_CREATE_TEMP_VIEW,
    }
)
_CREATES = frozenset(
    {
        sqlite3.SQLITE_CREATE_TABLE,
        sqlite3.SQLITE_CREATE_INDEX,
        sqlite3.SQLITE_CREATE_TRIGGER,
        sqlite3.SQLITE_CREATE_VIEW,
    }
)
"""Reported with the schema named: ``CREATE TABLE temp.t`` is one of these, not a temp create."""
_MAX_OPEN = 256
_PROGRESS_STEPS = 10_000
"""Virtual-machine steps between two checks of the statement's deadline (well under a millisecond)."""


def tenant_database_path(data_dir: Path, tenant_id: str) -> Path:
    return data_dir / "tenants" / validate_tenant_id(tenant_id) / "data.sqlite3"


def _authorizer(action: int, arg1: str | None, arg2: str | None, db_name: str | None, _source: str | None) -> int:
    if action in (sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH):
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_PRAGMA:
        if arg1 is not None and arg1.lower() in _READ_ONLY_PRAGMAS:
            return sqlite3.SQLITE_OK
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_FUNCTION and arg2 is not None and arg2.lower() in _FORBIDDEN_FUNCTIONS:
        return sqlite3.SQLITE_DENY
    if action in (sqlite3.SQLITE_CREATE_VTABLE, sqlite3.SQLITE_DROP_VTABLE) or action in _TEMP_OBJECTS:
        return sqlite3.SQLITE_DENY
    if action in _CREATES and db_name is not None and db_name.lower() == "temp":
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_READ and arg1 is not None and arg1.lower() in _FORBIDDEN_TABLES:
        return sqlite3.SQLITE_DENY
    if db_name not in (None, "main", "temp"):
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


class _TenantConnection:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10, uri=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
        conn.execute("PRAGMA trusted_schema=OFF")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
        self.page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
        conn.row_factory = sqlite3.Row
        conn.set_authorizer(_authorizer)
        conn.set_progress_handler(self._progress, _PROGRESS_STEPS)
        self.conn = conn
        self.path = path
        self.max_bytes: int | None = None
        """The ``sql_bytes`` quota applied to this connection (``max_page_count``), once applied."""
        self.lock = threading.Lock()
        # The running call's budget, set under ``lock`` and read by the progress handler.
        self.deadline = math.inf
        self.interrupt: Interrupt | None = None
        self.stopped: Literal["timeout", "cancelled"] | None = None

    def _progress(self) -> int:
        if self.interrupt is not None and self.interrupt.is_set():
            self.stopped = "cancelled"
        elif time.monotonic() > self.deadline:
            self.stopped = "timeout"
        else:
            return 0
        # Disarmed, so that the ROLLBACK after an aborted batch runs to completion.
        self.deadline, self.interrupt = math.inf, None
        return 1

    def bound(self, max_bytes: int) -> None:
        """Let the database grow to ``max_bytes`` at most (held under ``lock``). A quota below the
        current size keeps the current size: nothing more is added, deletes still work."""
        if max_bytes == self.max_bytes:
            return
        pages = page_limit(max_bytes, self.page_size)
        self.conn.set_authorizer(None)  # the authorizer refuses every pragma a tool could send
        try:
            self.conn.execute(f"PRAGMA max_page_count = {int(pages)}")
            # No tool can create a temp object; should anything still write the temp schema, it
            # is held to the same bound.
            self.conn.execute(f"PRAGMA temp.max_page_count = {int(pages)}")
        finally:
            self.conn.set_authorizer(_authorizer)
        self.max_bytes = max_bytes

    def full_means_quota(self) -> bool:
        """Whether ``SQLITE_FULL`` came from the quota (the page limit) rather than a full disk."""
        self.conn.set_authorizer(None)
        try:
            used = int(self.conn.execute("PRAGMA page_count").fetchone()[0])
            limit = int(self.conn.execute("PRAGMA max_page_count").fetchone()[0])
        except sqlite3.Error:
            return False
        finally:
            self.conn.set_authorizer(_authorizer)
        return full_means_quota(self.path, used, limit, self.page_size)

    def arm(self, seconds: float, interrupt: Interrupt | None) -> None:
        self.deadline = time.monotonic() + seconds
        self.interrupt = interrupt
        self.stopped = None

    def disarm(self) -> None:
        self.deadline, self.interrupt = math.inf, None

    def close(self) -> None:
        with self.lock:
            self.conn.close()


class SqliteSqlScopes:
    """Per-tenant SQLite databases under ``<data_dir>/tenants/<id>/``, connections kept in an LRU."""

    dialect: Literal["sqlite"] = "sqlite"

    def __init__(self, data_dir: Path, *, row_limit: int = 10_000, bulkheads: ThreadBulkheads | None = None) -> None:
        self._data_dir = data_dir
        self._row_limit = row_limit
        self.bulkheads = bulkheads or default_bulkheads()
        self._open = OpenPerTenant(self._open_connection, limit=_MAX_OPEN)

    def for_tenant(self, tenant_id: str) -> SqliteSqlHandle:
        validate_tenant_id(tenant_id)
        return SqliteSqlHandle(self, tenant_id)

    def connection(self, tenant_id: str) -> _TenantConnection:
        return self._open.get(tenant_id)

    def _open_connection(self, tenant_id: str) -> _TenantConnection:
        try:
            return _TenantConnection(tenant_database_path(self._data_dir, tenant_id))
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(f"cannot open the tenant database: {exc}") from None

    def forget_tenant(self, tenant_id: str, then: Callable[[], None]) -> None:
        """Close the tenant's connection if open and run ``then`` (removing its file) before
        anyone can open it again in this process."""
        self._open.discard(validate_tenant_id(tenant_id), then=then)

    def release_tenant(self, tenant_id: str) -> None:
        self._open.discard(tenant_id)

    def check(self) -> None:
        """Nothing to prove: each tenant's file is opened (and created) on first use."""

    @property
    def row_limit(self) -> int:
        return self._row_limit

    def close(self) -> None:
        self._open.close()


class SqliteSqlHandle:
    """``ctx.sql`` on the embedded default. See :class:`~tenantry.scoping.sql.base.SqlHandle`."""

    dialect: Literal["sqlite"] = "sqlite"

    def __init__(self, scopes: SqliteSqlScopes, tenant_id: str) -> None:
        self._scopes = scopes
        self._tenant_id = tenant_id

    async def fetch(self, sql: str, *params: SqlValue) -> list[dict[str, Any]]:
        def run(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            cursor = conn.execute(sql, params)
            rows = cursor.fetchmany(self._scopes.row_limit + 1)
            if len(rows) > self._scopes.row_limit:
                raise UsageError(f"query returned more than {self._scopes.row_limit} rows; add a LIMIT")
            return [dict(row) for row in rows]

        return await self._run(run)

    async def fetchone(self, sql: str, *params: SqlValue) -> dict[str, Any] | None:
        def run(conn: sqlite3.Connection) -> dict[str, Any] | None:
            row = conn.execute(sql, params).fetchone()
            return None if row is None else dict(row)

        return await self._run(run)

    async def execute(self, sql: str, *params: SqlValue) -> int:
        return await self._run(lambda conn: conn.execute(sql, params).rowcount)

    async def executemany(self, sql: str, rows: Iterable[Sequence[SqlValue]]) -> int:
        materialised = [tuple(row) for row in rows]

        def run(conn: sqlite3.Connection) -> int:
            conn.execute("BEGIN")
            try:
                count = conn.executemany(sql, materialised).rowcount
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # an interrupted statement may have rolled it back already
                    conn.execute("ROLLBACK")
                raise
            return count

        return await self._run(run)

    async def _run(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        bulkheads = self._scopes.bulkheads
        limits = bulkheads.limits_for(self._tenant_id)
        timeout, max_bytes = limits.sql_statement_timeout, limits.sql_bytes
        interrupt = Interrupt()
        return await bulkheads.run(
            lambda: self._run_sync(work, timeout, max_bytes, interrupt), tenant_id=self._tenant_id, interrupt=interrupt
        )

    def _run_sync(
        self, work: Callable[[sqlite3.Connection], _T], timeout: float, max_bytes: int, interrupt: Interrupt
    ) -> _T:
        tenant_conn = self._scopes.connection(self._tenant_id)
        with tenant_conn.lock:
            if interrupt.is_set():  # the caller left while this call waited for the connection
                raise QueryFailed("SQL statement cancelled")
            try:
                tenant_conn.bound(max_bytes)
            except sqlite3.Error as exc:
                raise self._translate(exc) from None
            tenant_conn.arm(timeout, interrupt)
            try:
                result = work(tenant_conn.conn)
                if tenant_conn.conn.in_transaction:
                    # The connection is the tenant's, shared by its calls: an open transaction would
                    # take in every later call's writes uncommitted and lock other processes out.
                    tenant_conn.conn.execute("ROLLBACK")
                    raise UsageError(
                        "a transaction cannot outlive its ctx.sql call (BEGIN or SAVEPOINT without COMMIT);"
                        " it was rolled back: each call is one transaction, use executemany for a batch"
                    )
                return result
            except sqlite3.OperationalError as exc:
                if tenant_conn.stopped == "timeout":
                    raise QueryFailed(
                        f"SQL statement stopped after the {timeout:g} s limit (sql_statement_timeout);"
                        " narrow the query or add a LIMIT"
                    ) from None
                if tenant_conn.stopped == "cancelled":
                    raise QueryFailed("SQL statement cancelled") from None
                if exc.sqlite_errorcode == sqlite3.SQLITE_FULL:
                    if tenant_conn.full_means_quota():
                        raise StorageQuotaExceeded(
                            f"SQL storage quota exceeded: the tenant's database is at its {max_bytes} byte limit"
                            " (sql_bytes); delete rows first"
                        ) from None
                    raise StorageError("the server's disk is full; the statement was not applied") from None
                raise self._translate(exc) from None
            except sqlite3.Error as exc:
                raise self._translate(exc) from None
            finally:
                tenant_conn.disarm()

    @staticmethod
    def _translate(exc: sqlite3.Error) -> Exception:
        if isinstance(exc, sqlite3.DatabaseError):
            if any(marker in str(exc) for marker in ("not authorized", "authorization denied", "prohibited")):
                return ScopeViolation("this SQL statement is not allowed in a tenant database")
            if isinstance(exc, sqlite3.OperationalError) and "database is locked" in str(exc):
                return StorageError("the tenant database is busy; try again")
        return QueryFailed(f"SQL error: {exc}")
