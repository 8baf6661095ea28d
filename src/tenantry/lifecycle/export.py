"""``tenantry tenant export``: everything held for a tenant, from every registered store, in one bundle."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tenantry.audit.events import AuditEvent
from tenantry.core.errors import NotFound
from tenantry.core.ids import validate_tenant_id
from tenantry.lifecycle.audit import AUDIT_PART
from tenantry.lifecycle.bundle import Bundle
from tenantry.lifecycle.evidence import append_evidence, utc_iso
from tenantry.lifecycle.registry import Advance, tenant_data_of

if TYPE_CHECKING:
    from tenantry.runtime import Runtime

__all__ = ["ExportOutcome", "export_tenant"]


@dataclass(frozen=True)
class ExportOutcome:
    tenant_id: str
    path: Path
    manifest_sha256: str
    parts: int
    bytes: int
    stores: list[str]


def export_tenant(
    runtime: Runtime,
    tenant_id: str,
    out: Path,
    *,
    actor: str,
    advance: Advance = lambda _: None,
    on_store: Callable[[str], None] = lambda _: None,
) -> ExportOutcome:
    """Write the bundle of ``tenant_id`` to the new directory ``out``, record the export in the
    tenant's audit stream and in the evidence log.

    :raises NotFound: unknown tenant. :raises UsageError: ``out`` exists or cannot be made.
    :raises StorageError: a store failed (no bundle is left behind then).
    :raises StreamNotIntact: the tenant's audit stream does not verify.
    """
    validate_tenant_id(tenant_id)
    if runtime.store.get_tenant(tenant_id) is None:
        raise NotFound(f"no tenant {tenant_id!r}")
    entries = tenant_data_of(runtime)
    started = time.time()
    bundle = Bundle(out, outside=runtime.data_dir)
    try:
        for entry in entries:
            on_store(entry.name)
            entry.export(tenant_id, bundle, advance)
        stores = [e.name for e in entries]
        digest = bundle.finish(
            {
                "tenant_id": tenant_id,
                "created": utc_iso(started),
                "by": actor,
                "issuer": runtime.endpoints.issuer,
                "stores": stores,
                "audit": {
                    "part": AUDIT_PART,
                    "verify": f"tenantry audit verify --file {AUDIT_PART}",
                },
                "secrets": "names and dates only; values are never exported",
            }
        )
    except BaseException:
        bundle.abandon()
        raise
    runtime.record_admin(
        AuditEvent(
            event_type="tenant_exported",
            tenant_id=tenant_id,
            result_status="ok",
            actor=actor,
            detail={
                "manifest_sha256": digest,
                "parts": len(bundle.parts),
                "bytes": sum(int(p["bytes"]) for p in bundle.parts),
                "stores": stores,
            },
        )
    )
    append_evidence(
        runtime.data_dir, kind="export", tenant=tenant_id, at=started, by=actor, stores=stores, certificate=digest
    )
    return ExportOutcome(tenant_id, out, digest, len(bundle.parts), sum(int(p["bytes"]) for p in bundle.parts), stores)
