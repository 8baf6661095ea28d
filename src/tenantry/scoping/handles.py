"""The bundle of scoped-handle factories one deployment hands to its tools."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from tenantry.scoping.files.base import FileScopes
from tenantry.scoping.secrets.base import SecretScopes
from tenantry.scoping.sql.base import SqlScopes
from tenantry.scoping.threads import ThreadBulkheads, default_bulkheads
from tenantry.scoping.vectors.base import VectorScopes

__all__ = ["DataScopes", "ReleasesTenants"]


@runtime_checkable
class ReleasesTenants(Protocol):
    """Scopes that keep per-tenant resources open (database files, cached keys)."""

    def release_tenant(self, tenant_id: str) -> None:
        """Close or drop what is held open for the tenant (blocking); it is reopened on next use."""
        ...


@dataclass(frozen=True)
class DataScopes:
    """Every factory hands out handles bound to one tenant; there is no unscoped handle.

    ``bulkheads`` is the per-tenant thread capacity the handles' blocking work runs in (and
    ``bulkheads.limits_for`` the tenants' limits they enforce); synchronous tool code belongs there
    too: ``await scopes.bulkheads.run(fn, tenant_id=...)``.
    """

    sql: SqlScopes
    files: FileScopes
    vectors: VectorScopes
    secrets: SecretScopes
    bulkheads: ThreadBulkheads = field(default_factory=default_bulkheads)

    def release_tenant(self, tenant_id: str) -> None:
        """Close what every scope keeps open for the tenant (blocking); see :class:`ReleasesTenants`."""
        for scopes in (self.sql, self.vectors, self.files, self.secrets):
            if isinstance(scopes, ReleasesTenants):
                scopes.release_tenant(tenant_id)

    def close(self) -> None:
        self.sql.close()
        self.vectors.close()
        close_files = getattr(self.files, "close", None)
        if close_files is not None:
            close_files()
