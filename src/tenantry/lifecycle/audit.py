"""The audit stream's part of a tenant's life cycle: exported with its chain and checkpoints
(re-verifiable offline with ``tenantry audit verify --file BUNDLE/audit/stream.jsonl``), and
**retained** on deletion.

Why retained (docs/compliance.md has the full reasoning): the stream is the operator's record
of what was done with the tenant's data, kept under a retention duty (SPEC §5: 12 months,
GDPR Art. 17(3)(b) and (e), SOC 2 CC7); it is append-only and hash-chained, so erasing records
would make it unverifiable; and it holds no tool arguments or results (``args_hash`` only).
It is purged with every other stream by ``tenantry audit purge`` once past retention.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tenantry.audit.export import sidecar_path, write_export
from tenantry.lifecycle.registry import Advance, register

if TYPE_CHECKING:
    from tenantry.audit.checkpoints import CheckpointSigner
    from tenantry.audit.store.base import AuditStore
    from tenantry.lifecycle.bundle import Bundle
    from tenantry.runtime import Runtime

__all__ = ["AuditData", "AUDIT_PART"]

AUDIT_PART = "audit/stream.jsonl"


@dataclass
class AuditData:
    open_store: Callable[[], AuditStore]
    signer: Callable[[], CheckpointSigner]
    name: str
    retained: bool = True

    def export(self, tenant_id: str, bundle: Bundle, advance: Advance) -> None:
        """:raises StreamNotIntact: the stream does not verify (an export of it is never signed)."""
        store = self.open_store()
        try:
            # A tenant without records yet gets an empty, signed export all the same.
            out = bundle.path_of(AUDIT_PART)
            outcome = write_export(store, self.signer(), tenant_id, out)
        finally:
            store.close()
        bundle.record(AUDIT_PART, self.name)
        bundle.record(f"audit/{sidecar_path(out).name}", self.name)
        advance(outcome.records)

    def erase(self, tenant_id: str) -> None:
        """Retained: see the module docstring. The deletion's tombstone is appended by the caller."""

    def leftovers(self, tenant_id: str) -> list[str]:
        return []


@register(
    "tenantry.audit.store.sqlite.SqliteAuditStore",
    "tenantry.audit.store.postgres.PostgresAuditStore",
)
def _audit(adapter: object, runtime: Runtime) -> AuditData:
    url = runtime.settings.audit.url or ""
    backend = "postgresql" if url.startswith("postgres") else "sqlite"
    return AuditData(runtime.audit_store, runtime.checkpoint_signer, f"audit:{backend}")
