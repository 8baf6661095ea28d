"""``tenantry tenant delete``: revoke every credential of a tenant, erase it from every registered
store, crypto-shred its data key, and leave a tombstone and a signed deletion certificate.

Resumable: the deletion is recorded in the control store (meta ``lifecycle:deleting:<id>``)
before anything else, each store's erasure is idempotent and recorded once done, and a run
that stopped anywhere (a store failed, the process died) finishes when run again, even after
the tenant's own control-plane row is gone. Steps:

1. record the deletion (``started``, ``by``); halt the tenant, revoke every token issued to it
   until then (one tenant-wide revocation, kept after the deletion until it expires) and every
   API key: every server sharing the control store refuses its sessions within a second;
2. erase each store in registry order (data, secrets by crypto-shredding, control plane, the
   tenant's directory), then check that none still holds anything;
3. append the ``tenant_deleted`` tombstone to the tenant's audit stream (which is retained);
4. sign the deletion certificate (the audit key ring) naming the tombstone, write it under
   ``<data_dir>/evidence/deletions/``, append the evidence log, mark the deletion completed.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tenantry.audit.chain import from_hex, to_hex
from tenantry.audit.events import AuditEvent, iso_timestamp
from tenantry.controlplane.erase import DELETING_KEY_PREFIX
from tenantry.core.credentials import Revocation
from tenantry.core.errors import NotFound, StorageError
from tenantry.core.ids import validate_tenant_id
from tenantry.lifecycle.evidence import EVIDENCE_DIR, append_evidence
from tenantry.lifecycle.registry import TenantData, tenant_data_of

if TYPE_CHECKING:
    from collections.abc import Callable

    from tenantry.runtime import Runtime

__all__ = ["CERTIFICATE_FORMAT", "DeletionOutcome", "delete_tenant", "certificates_dir"]

CERTIFICATE_FORMAT = "tenantry-deletion-certificate/1"
_DELETION_REASON = "tenant deleted"


@dataclass
class _State:
    started: float
    by: str
    erased: list[str] = field(default_factory=list)
    announced: bool = False
    """``tenant_deletion_started`` is in the audit stream."""
    tombstone_seq: int | None = None
    tombstone_hash: str | None = None
    completed: float | None = None
    certificate: str | None = None


@dataclass(frozen=True)
class DeletionOutcome:
    tenant_id: str
    certificate: Path
    erased: list[str]
    retained: list[str]
    resumed: bool


def certificates_dir(data_dir: Path) -> Path:
    return data_dir / EVIDENCE_DIR / "deletions"


def _load(runtime: Runtime, tenant_id: str) -> _State | None:
    raw = runtime.store.get_meta(DELETING_KEY_PREFIX + tenant_id)
    if not raw:
        return None
    return _State(**json.loads(raw))


def _save(runtime: Runtime, tenant_id: str, state: _State) -> None:
    runtime.store.set_meta(DELETING_KEY_PREFIX + tenant_id, json.dumps(asdict(state), sort_keys=True))


def delete_tenant(
    runtime: Runtime, tenant_id: str, *, actor: str, on_step: Callable[[str], None] = lambda _: None
) -> DeletionOutcome:
    """Delete ``tenant_id`` everywhere, or finish a deletion that stopped.

    :raises NotFound: no such tenant, and no deletion of it in progress.
    :raises StorageError: a store failed or still holds data; running again continues from there.
    :raises AuditUnavailable: the tombstone could not be written; running again continues.
    """
    validate_tenant_id(tenant_id)
    tenant = runtime.store.get_tenant(tenant_id)
    state = _load(runtime, tenant_id)
    if state is not None and state.completed is not None:
        if tenant is None:
            raise NotFound(f"tenant {tenant_id!r} was deleted at {iso_timestamp(state.completed)}")
        state = None  # a new tenant of the same id, made after an earlier deletion
    if tenant is None and state is None:
        raise NotFound(f"no tenant {tenant_id!r}")
    resumed = state is not None
    if state is None:
        state = _State(started=time.time(), by=actor)
        _save(runtime, tenant_id, state)  # first, so that any later failure leaves a resumable deletion
    if tenant is not None:
        on_step("revoking credentials")
        revoked = _revoke_everything(runtime, tenant_id, state)
        if not state.announced:
            runtime.record_admin(
                AuditEvent(
                    event_type="tenant_deletion_started",
                    tenant_id=tenant_id,
                    result_status="ok",
                    actor=actor,
                    reason=_DELETION_REASON,
                    detail={"api_keys_revoked": revoked, "tokens_issued_until": iso_timestamp(state.started)},
                )
            )
            state.announced = True
            _save(runtime, tenant_id, state)
    entries = tenant_data_of(runtime)
    for entry in entries:
        if entry.retained or entry.name in state.erased:
            continue
        on_step(f"erasing {entry.name}")
        entry.erase(tenant_id)
        state.erased.append(entry.name)
        _save(runtime, tenant_id, state)
    _check_nothing_left(entries, tenant_id)
    retained = [e.name for e in entries if e.retained]
    if state.tombstone_seq is None:
        on_step("writing the tombstone")
        _tombstone(runtime, tenant_id, state, retained)
    on_step("signing the certificate")
    certificate = _certify(runtime, tenant_id, state, retained)
    state.completed, state.certificate = time.time(), str(certificate.relative_to(runtime.data_dir))
    append_evidence(
        runtime.data_dir,
        kind="deletion",
        tenant=tenant_id,
        at=state.completed,
        by=state.by,
        stores=sorted(state.erased),
        certificate=state.certificate,
    )
    _save(runtime, tenant_id, state)
    return DeletionOutcome(tenant_id, certificate, sorted(state.erased), retained, resumed)


def _revoke_everything(runtime: Runtime, tenant_id: str, state: _State) -> int:
    """Halt the tenant, revoke every token issued to it until the deletion began and every API key."""
    store, at = runtime.store, int(state.started)
    store.set_status(tenant_id, "halted", "being deleted")
    caught = any(
        r.kind == "tenant" and r.tenant_id == tenant_id and (r.cutoff or 0) >= at
        for r in store.list_revocations(int(time.time()))
    )
    if not caught:
        store.add_revocation(
            Revocation(
                "tenant",
                tenant_id,
                at,
                at + runtime.longest_token_lifetime(),
                cutoff=at,
                reason=_DELETION_REASON,
                actor=state.by,
            )
        )
    revoked = 0
    for key in store.list_api_keys(tenant_id):
        if key.revoked_at is None:
            store.revoke_api_key(key.key_id, at)
            revoked += 1
    return revoked


def _check_nothing_left(entries: list[TenantData], tenant_id: str) -> None:
    for entry in entries:
        left = entry.leftovers(tenant_id)
        if left:
            raise StorageError(
                f"{entry.name} still holds data of tenant {tenant_id} ({'; '.join(left)});"
                f" run `tenantry tenant delete {tenant_id} --yes` again"
            )


def _tombstone(runtime: Runtime, tenant_id: str, state: _State, retained: list[str]) -> None:
    event = AuditEvent(
        event_type="tenant_deleted",
        tenant_id=tenant_id,
        result_status="ok",
        actor=state.by,
        reason=_DELETION_REASON,
        detail={"erased": sorted(state.erased), "retained": retained, "started": iso_timestamp(state.started)},
    )
    store = runtime.audit_store()
    try:
        (stored,) = store.append([event])
    finally:
        store.close()
    state.tombstone_seq, state.tombstone_hash = stored.seq, to_hex(stored.hash)
    _save(runtime, tenant_id, state)


def _certify(runtime: Runtime, tenant_id: str, state: _State, retained: list[str]) -> Path:
    assert state.tombstone_seq is not None and state.tombstone_hash is not None
    signer = runtime.checkpoint_signer()
    completed = time.time()
    token = signer.sign_deletion(
        tenant_id,
        erased=state.erased,
        retained=retained,
        started=state.started,
        completed=completed,
        actor=state.by,
        tombstone_seq=state.tombstone_seq,
        tombstone_hash=from_hex(state.tombstone_hash),
    )
    document: dict[str, Any] = {
        "format": CERTIFICATE_FORMAT,
        "tenant_id": tenant_id,
        "certificate": token,
        "jwks": signer.trusted_keys(source="the audit key ring").jwks(),
        "verify": "tenantry audit verify --certificate THIS_FILE",
    }
    directory = certificates_dir(runtime.data_dir)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(completed))
    path = directory / f"{tenant_id}-{stamp}.json"
    partial = path.with_name(f".{path.name}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write((json.dumps(document, indent=2, sort_keys=True) + "\n").encode())
        handle.flush()
        os.fsync(handle.fileno())
    partial.replace(path)
    return path
