"""Per-tenant limits: what one tenant may use, so that it can never starve another.

Defaults come from the ``[limits]`` settings; an operator overrides them per tenant
(``tenantry tenant limits ID ...``), and the override is stored in the control plane. The
effective limits of a tenant are the defaults with its overrides applied (no I/O here).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

__all__ = ["TenantLimits", "LIMIT_NAMES", "LIMIT_MAXIMA", "parse_limit_overrides"]


@dataclass(frozen=True, slots=True)
class TenantLimits:
    """Every per-tenant budget. ``0`` never means "unlimited": each has a finite default."""

    calls_per_second: float = 50.0
    """Sustained rate of tool calls, resource reads and prompt gets (moving 10 s window)."""
    burst: int = 100
    """Calls allowed within any one second on top of an idle sustained rate."""
    concurrent_calls: int = 16
    """Calls of the tenant in flight at once (per server process)."""
    daily_calls: int = 1_000_000
    """Calls per UTC day."""
    tool_timeout: float = 30.0
    """Seconds one call may run before it is cancelled."""
    sessions: int = 100
    """Open handshake-era sessions of the tenant (per server process)."""
    session_idle: float = 1800.0
    """Seconds after which an idle session of the tenant is closed."""
    file_bytes: int = 1024 * 1024 * 1024
    """Bytes the tenant may keep in ``ctx.files``."""
    file_count: int = 100_000
    """Files the tenant may keep in ``ctx.files``."""
    sql_statement_timeout: float = 10.0
    """Seconds one statement may run on the tenant's embedded SQLite database."""
    sql_bytes: int = 1024 * 1024 * 1024
    """Bytes the tenant's embedded SQLite database may grow to (``ctx.sql``; on PostgreSQL the
    tenants share tables, bounded by the database's own storage)."""
    vector_bytes: int = 1024 * 1024 * 1024
    """Bytes the tenant's embedded vector store (``ctx.vectors`` on sqlite-vec) may grow to."""
    blocking_threads: int = 4
    """Worker threads the tenant's blocking work (SQL, files, secrets, sync tools) may occupy."""
    requests_per_second: int = 200
    """Requests of any kind on ``/mcp`` within one second (lists, pings, notifications and calls
    alike), per server process: what the call limits do not count still costs the server. Never
    below twice ``burst``, so that raising a tenant's call limits raises this one with them."""

    def with_overrides(self, overrides: Mapping[str, Any]) -> TenantLimits:
        """These limits with ``overrides`` (already validated by :func:`parse_limit_overrides`)."""
        return replace(self, **dict(overrides)) if overrides else self

    def as_dict(self) -> dict[str, float | int]:
        return {name: getattr(self, name) for name in LIMIT_NAMES}


LIMIT_NAMES: tuple[str, ...] = tuple(f.name for f in fields(TenantLimits))
LIMIT_MAXIMA: dict[str, float] = {
    "calls_per_second": 1_000_000,
    "burst": 10_000_000,
    "concurrent_calls": 100_000,
    "daily_calls": 10**12,
    "tool_timeout": 86_400,
    "sessions": 1_000_000,
    "session_idle": 30 * 86_400,
    "file_bytes": 10**15,
    "file_count": 10**9,
    "sql_statement_timeout": 86_400,
    "sql_bytes": 10**15,
    "vector_bytes": 10**15,
    "blocking_threads": 64,
    "requests_per_second": 10_000_000,
}
"""Largest value each limit accepts (beyond them a number stops being a limit and starts breaking things)."""
_INTEGER = frozenset(name for name in LIMIT_NAMES if isinstance(getattr(TenantLimits(), name), int))


def parse_limit_overrides(values: Mapping[str, Any]) -> dict[str, float | int]:
    """Validated overrides: known names only, positive finite numbers (integers where counted).

    :raises ValueError: naming the first bad entry.
    """
    parsed: dict[str, float | int] = {}
    for name, raw in values.items():
        if name not in LIMIT_NAMES:
            raise ValueError(f"unknown limit {name!r} (known: {', '.join(LIMIT_NAMES)})")
        if isinstance(raw, bool) or not isinstance(raw, int | float | str):
            raise ValueError(f"limit {name} must be a number")
        try:
            number = int(raw) if name in _INTEGER else float(raw)
        except ValueError:
            raise ValueError(f"limit {name} must be {'an integer' if name in _INTEGER else 'a number'}") from None
        if not number > 0 or number != number or number == float("inf"):
            raise ValueError(f"limit {name} must be a positive, finite number")
        if number > LIMIT_MAXIMA[name]:
            raise ValueError(f"limit {name} must be at most {LIMIT_MAXIMA[name]:g}")
        parsed[name] = number
    return parsed
