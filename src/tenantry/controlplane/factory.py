"""Choosing the control-plane store from a URL in the settings."""

from __future__ import annotations

from pathlib import Path

from tenantry.controlplane.base import ControlStore
from tenantry.core.errors import UsageError

__all__ = ["open_tenant_store"]


def open_tenant_store(url: str | None, data_dir: Path) -> ControlStore:
    """``None`` or ``sqlite:`` -> ``<data_dir>/control.sqlite3``; ``postgresql://...`` -> PostgreSQL.

    :raises UsageError: for an unknown scheme. :raises StorageError: when the store cannot be opened.
    """
    if url is None or url in ("sqlite:", "sqlite://"):
        from tenantry.controlplane.sqlite import SqliteTenantStore

        return SqliteTenantStore(data_dir / "control.sqlite3")
    if url.startswith("sqlite:///"):
        from tenantry.controlplane.sqlite import SqliteTenantStore

        return SqliteTenantStore(Path(url.removeprefix("sqlite:///")))
    if url.startswith(("postgresql://", "postgres://")):
        from tenantry.controlplane.postgres import PostgresTenantStore

        return PostgresTenantStore(url)
    raise UsageError("controlplane.url must be sqlite:///PATH or postgresql://...")
