"""The bundle of scoped-handle factories one deployment hands to its tools."""

from __future__ import annotations

from dataclasses import dataclass, field

from tenantry.scoping.files.base import FileScopes
from tenantry.scoping.secrets.base import SecretScopes
from tenantry.scoping.sql.base import SqlScopes
from tenantry.scoping.threads import ThreadBulkheads, default_bulkheads
from tenantry.scoping.vectors.base import VectorScopes

__all__ = ["DataScopes"]


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

    def close(self) -> None:
        self.sql.close()
        self.vectors.close()
        close_files = getattr(self.files, "close", None)
        if close_files is not None:
            close_files()
