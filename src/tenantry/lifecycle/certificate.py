"""Checking a deletion certificate: its signature, and the tombstone it names in the audit stream."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pydantic_core

from tenantry.audit.checkpoints import DeletionClaims, InvalidCheckpoint, TrustedKeys, verify_deletion_certificate
from tenantry.audit.store.base import AuditStore

__all__ = ["CertificateReport", "verify_certificate_file"]


@dataclass(frozen=True)
class CertificateReport:
    ok: bool
    tenant_id: str
    reason: str
    claims: DeletionClaims | None = None

    def line(self) -> str:
        if not self.ok:
            return f"{self.tenant_id}: deletion certificate FAILED: {self.reason}"
        assert self.claims is not None
        c = self.claims
        return (
            f"{c.tenant_id}: deletion certificate ok: erased from {', '.join(c.erased)} at {c.completed} by {c.actor}"
            f" (retained: {', '.join(c.retained) or 'nothing'}; tombstone seq {c.tombstone_seq}; key {c.kid})"
        )


def verify_certificate_file(path: Path, keys: TrustedKeys, store: AuditStore) -> CertificateReport:
    """Verify the certificate at ``path`` with ``keys``, and that ``store`` holds the tombstone it
    names (same seq, same hash, a ``tenant_deleted`` record of that tenant).

    :raises OSError: ``path`` cannot be read.
    """
    data = path.read_bytes()
    try:
        document = json.loads(data)
        token = document["certificate"]
        if not isinstance(token, str):
            raise TypeError("certificate is not a string")
    except (ValueError, KeyError, TypeError):
        return CertificateReport(False, "?", f"{path.name} is not a deletion certificate")
    named = str(document.get("tenant_id", "?"))
    try:
        claims = verify_deletion_certificate(token, keys)
    except InvalidCheckpoint as exc:
        return CertificateReport(False, named, str(exc))
    if claims.tenant_id != named:
        return CertificateReport(False, named, "the file names another tenant than its signed certificate")
    for stored in store.read(claims.tenant_id, after_seq=claims.tombstone_seq - 1):
        if stored.seq != claims.tombstone_seq:
            break
        fields = pydantic_core.from_json(stored.record)
        if stored.hash != claims.tombstone_hash or fields.get("event_type") != "tenant_deleted":
            return CertificateReport(False, claims.tenant_id, f"seq {stored.seq} of the stream is not this tombstone")
        return CertificateReport(True, claims.tenant_id, "", claims)
    return CertificateReport(
        False, claims.tenant_id, f"the audit stream has no record at seq {claims.tombstone_seq} (the tombstone)"
    )
