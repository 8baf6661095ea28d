"""Choosing the audit store from a URL in the settings."""

from __future__ import annotations

from pathlib import Path

from tenantry.audit.store.base import AuditStore
from tenantry.core.errors import UsageError

__all__ = ["open_audit_store"]


def open_audit_store(url: str | None, data_dir: Path, *, busy_timeout: float = 2.0) -> AuditStore:
    """``None`` -> ``<data_dir>/audit.sqlite3``; ``sqlite:///PATH``; ``postgresql://...``.

    :raises UsageError: for an unknown scheme. :raises AuditUnavailable: when it cannot be opened.
    """
    if url is None or url in ("sqlite:", "sqlite://"):
        from tenantry.audit.store.sqlite import SqliteAuditStore

        return SqliteAuditStore(data_dir / "audit.sqlite3", busy_timeout=busy_timeout)
    if url.startswith("sqlite:///"):
        from tenantry.audit.store.sqlite import SqliteAuditStore

        return SqliteAuditStore(Path(url.removeprefix("sqlite:///")), busy_timeout=busy_timeout)
    if url.startswith(("postgresql://", "postgres://")):
        from tenantry.audit.store.postgres import PostgresAuditStore

        return PostgresAuditStore(url, statement_timeout=busy_timeout)
    raise UsageError("audit.url must be sqlite:///PATH or postgresql://...")
