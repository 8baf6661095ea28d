"""The tenant-scoped SQL handle tools receive as ``ctx.sql``."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal, Protocol

__all__ = ["SqlHandle", "SqlScopes", "SqlValue", "SqlDialect"]

SqlValue = str | int | float | bytes | bool | None
SqlDialect = Literal["sqlite", "postgresql"]


class SqlHandle(Protocol):
    """SQL that can only ever see one tenant's rows.

    Placeholders are ``?`` on every backend. Values are always bound, never interpolated.

    :raises ScopeViolation: for a statement that tries to leave the tenant's data
        (``ATTACH``, extension loading, pragmas that change the engine).
    :raises QueryFailed: for an invalid statement (syntax, constraint); the message is the
        engine's, which can only describe this tenant's own schema.
    :raises StorageError: when the database itself is unavailable.
    """

    @property
    def dialect(self) -> SqlDialect:
        """Which SQL the statements are written in."""
        ...

    async def fetch(self, sql: str, *params: SqlValue) -> list[dict[str, Any]]:
        """Rows as dicts keyed by column name."""
        ...

    async def fetchone(self, sql: str, *params: SqlValue) -> dict[str, Any] | None: ...

    async def execute(self, sql: str, *params: SqlValue) -> int:
        """Run one statement; returns the number of rows changed."""
        ...

    async def executemany(self, sql: str, rows: Iterable[Sequence[SqlValue]]) -> int: ...


class SqlScopes(Protocol):
    """Hands out SQL handles, one tenant at a time; there is no unscoped handle."""

    @property
    def dialect(self) -> SqlDialect: ...

    def for_tenant(self, tenant_id: str) -> SqlHandle: ...

    def check(self) -> None:
        """Prove the store is reachable and enforces isolation (readiness, start-up).

        :raises StorageError: naming what is wrong.
        """
        ...

    def close(self) -> None: ...
