"""``ctx.sql``'s part of a tenant's life cycle: one JSON Lines part per table.

SQLite (the embedded default): the tenant's own database file, read through a separate
read-only connection; erasure closes the server's connection in this process and deletes the
file with its write-ahead log. PostgreSQL: the tenant's rows of every table, read and deleted
in the tenant's own transactions (with its proof), so row-level security itself keeps every
other tenant's rows out of reach; rows are paged by ``ctid``, never loaded whole.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tenantry.core.errors import QueryFailed, StorageError
from tenantry.lifecycle.registry import Advance, register
from tenantry.scoping.sql.sqlite import tenant_database_path

if TYPE_CHECKING:
    from tenantry.lifecycle.bundle import Bundle
    from tenantry.runtime import Runtime
    from tenantry.scoping.sql.postgres import PostgresSqlScopes
    from tenantry.scoping.sql.sqlite import SqliteSqlScopes

__all__ = ["SqliteSqlData", "PostgresSqlData"]

_SQLITE_SUFFIXES = ("", "-wal", "-shm", "-journal")
_PAGE = 1000


def _quoted(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


@dataclass
class SqliteSqlData:
    scopes: SqliteSqlScopes
    data_dir: Path
    name: str = "sql:sqlite"
    retained: bool = False

    def _path(self, tenant_id: str) -> Path:
        return tenant_database_path(self.data_dir, tenant_id)

    def export(self, tenant_id: str, bundle: Bundle, advance: Advance) -> None:
        path = self._path(tenant_id)
        if not path.is_file():
            return
        try:
            conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=10)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot read the tenant database: {exc}") from None
        try:
            tables = conn.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
            ).fetchall()
            bundle.write_json("sql/schema.json", self.name, {str(n): str(s) for n, s in tables})
            for table, _ in tables:
                bundle.write_jsonl(f"sql/{table}.jsonl", self.name, _sqlite_rows(conn, str(table), advance))
        except sqlite3.Error as exc:
            raise StorageError(f"cannot read the tenant database: {exc}") from None
        finally:
            conn.close()

    def erase(self, tenant_id: str) -> None:
        path = self._path(tenant_id)

        def remove() -> None:
            try:
                for suffix in _SQLITE_SUFFIXES:
                    with contextlib.suppress(FileNotFoundError):
                        path.with_name(path.name + suffix).unlink()
            except OSError as exc:
                raise StorageError(f"cannot delete the tenant database: {exc.strerror}") from None

        self.scopes.forget_tenant(tenant_id, then=remove)

    def leftovers(self, tenant_id: str) -> list[str]:
        path = self._path(tenant_id)
        return [f"file {p.name}" for p in (path.with_name(path.name + s) for s in _SQLITE_SUFFIXES) if p.exists()]


def _sqlite_rows(conn: sqlite3.Connection, table: str, advance: Advance) -> Iterator[dict[str, Any]]:
    cursor = conn.execute(f"SELECT * FROM {_quoted(table)}")  # noqa: S608 - a table name from sqlite_master
    columns = [d[0] for d in cursor.description]
    while rows := cursor.fetchmany(_PAGE):
        for row in rows:
            yield dict(zip(columns, row, strict=True))
        advance(len(rows))


@register("tenantry.scoping.sql.sqlite.SqliteSqlScopes")
def _sqlite(adapter: object, runtime: Runtime) -> SqliteSqlData:
    return SqliteSqlData(runtime.scopes.sql, runtime.data_dir)  # type: ignore[arg-type]


_TABLES = (
    "SELECT table_name FROM information_schema.tables"
    " WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY table_name"
)


@dataclass
class PostgresSqlData:
    scopes: PostgresSqlScopes
    name: str = "sql:postgresql"
    retained: bool = False

    def _tables(self, tenant_id: str) -> list[str]:
        def work(cur: Any, _: Any) -> list[str]:
            cur.execute(_TABLES)
            return [str(row["table_name"]) for row in cur.fetchall()]

        return self.scopes.run(tenant_id, work)

    def export(self, tenant_id: str, bundle: Bundle, advance: Advance) -> None:
        for table in self._tables(tenant_id):
            bundle.write_jsonl(f"sql/{table}.jsonl", self.name, self._rows(tenant_id, table, advance))

    def _rows(self, tenant_id: str, table: str, advance: Advance) -> Iterator[dict[str, Any]]:
        import json

        query = (
            f"SELECT t.ctid::text AS row_ctid, row_to_json(t)::text AS row_json FROM {_quoted(table)} AS t"  # noqa: S608
            " WHERE t.ctid > %s::tid ORDER BY t.ctid LIMIT %s"
        )
        after = "(0,0)"
        while True:

            def work(cur: Any, _: Any, start: str = after) -> list[dict[str, Any]]:
                cur.execute(query, (start, _PAGE))
                return list(cur.fetchall())

            page = self.scopes.run(tenant_id, work)
            for row in page:
                yield json.loads(row["row_json"])
            advance(len(page))
            if len(page) < _PAGE:
                return
            after = str(page[-1]["row_ctid"])

    def erase(self, tenant_id: str) -> None:
        tables = self._tables(tenant_id)
        # Foreign keys between tenant tables decide an order; a table whose rows are still
        # referenced is retried after the others.
        for _ in range(len(tables) + 1):
            failed: list[str] = []
            for table in tables:

                def work(cur: Any, _: Any, t: str = table) -> None:
                    cur.execute(f"DELETE FROM {_quoted(t)}")  # noqa: S608

                try:
                    self.scopes.run(tenant_id, work)
                except QueryFailed:
                    failed.append(table)
            if not failed:
                return
            tables = failed
        raise StorageError(f"cannot delete the tenant's rows of {', '.join(tables)} (foreign keys?)")

    def leftovers(self, tenant_id: str) -> list[str]:
        found = []
        for table in self._tables(tenant_id):

            def work(cur: Any, _: Any, t: str = table) -> int:
                cur.execute(f"SELECT count(*) AS n FROM {_quoted(t)}")  # noqa: S608
                return int(cur.fetchone()["n"])

            rows = self.scopes.run(tenant_id, work)
            if rows:
                found.append(f"{rows} row(s) in {table}")
        return found


@register("tenantry.scoping.sql.postgres.PostgresSqlScopes")
def _postgres(adapter: object, runtime: Runtime) -> PostgresSqlData:
    return PostgresSqlData(runtime.scopes.sql)  # type: ignore[arg-type]
