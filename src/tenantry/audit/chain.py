"""The hash chain of a tenant's audit stream (pure functions, no I/O).

A record is the RFC 8785 canonical JSON of its fields (:data:`RECORD_FIELDS`; absent values
are ``null``). Record ``n`` of a stream stores::

    hash_n = SHA-256( hash_{n-1} || record_n )          (raw 32-byte digests)
    hash_0 = SHA-256( "tenantry-audit-genesis:" || tenant_id )

so a record cannot be changed, removed, inserted or moved without breaking every later
link, and a stream cannot be transplanted into another tenant's. Signed checkpoints of
stream heads (see :mod:`tenantry.audit.checkpoints`) catch a rewritten or truncated tail.

An exported line is the record's fields plus ``prev_hash`` and ``hash`` as ``sha256:<hex>``;
anyone can re-verify it offline with any RFC 8785 implementation and SHA-256.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import pydantic_core

from tenantry.audit.events import AuditEvent, canonical_json, iso_timestamp

__all__ = [
    "RECORD_FIELDS",
    "StoredRecord",
    "genesis",
    "link",
    "encode_record",
    "record_seq",
    "to_hex",
    "from_hex",
    "export_line",
]

RECORD_FIELDS = (
    "seq",
    "tenant_id",
    "timestamp",
    "event_type",
    "session_id",
    "subject",
    "tool_name",
    "args_hash",
    "result_status",
    "latency_ms",
    "ip_address",
    "request_id",
    "reason",
    "actor",
    "detail",
)

_GENESIS_PREFIX = b"tenantry-audit-genesis:"
_SEQ_KEY = b'"seq":'


@dataclass(frozen=True, slots=True)
class StoredRecord:
    tenant_id: str
    seq: int
    record: bytes
    """The canonical JSON exactly as hashed."""
    hash: bytes
    """32-byte SHA-256 digest: link(previous hash, record)."""
    created: float


def genesis(tenant_id: str) -> bytes:
    return hashlib.sha256(_GENESIS_PREFIX + tenant_id.encode()).digest()


def link(previous: bytes, record: bytes) -> bytes:
    return hashlib.sha256(previous + record).digest()


def _latency(value: float | None) -> float | int | None:
    if value is None:
        return None
    rounded = round(value, 3)
    return int(rounded) if rounded.is_integer() else rounded


def encode_record(event: AuditEvent, seq: int) -> bytes:
    """The canonical bytes of ``event`` as record ``seq`` of its tenant's stream."""
    fields = {
        # Already in RFC 8785 key order; only ``detail`` can hold values that need the general path.
        "actor": event.actor,
        "args_hash": event.args_hash,
        "detail": event.detail or None,
        "event_type": event.event_type,
        "ip_address": event.ip_address,
        "latency_ms": _latency(event.latency_ms),
        "reason": event.reason,
        "request_id": event.request_id,
        "result_status": event.result_status,
        "seq": seq,
        "session_id": event.session_id,
        "subject": event.subject,
        "tenant_id": event.tenant_id,
        "timestamp": iso_timestamp(event.created),
        "tool_name": event.tool_name,
    }
    if fields["detail"] is None:
        return pydantic_core.to_json(fields)
    return canonical_json(fields)


def record_seq(record: bytes) -> int | None:
    """The ``seq`` written inside a canonical record, read without parsing the JSON.

    Sound because canonical JSON escapes every quote inside strings (so ``"seq":`` only
    appears as a key) and sorts keys: every top-level key after ``seq`` (``session_id`` ...
    ``tool_name``) holds a scalar, so the last occurrence is the top-level one even when
    ``detail`` nests a ``seq`` of its own.
    """
    start = record.rfind(_SEQ_KEY)
    if start < 0:
        return None
    start += len(_SEQ_KEY)
    end = record.find(b",", start)
    try:
        return int(record[start : end if end >= 0 else len(record) - 1])
    except ValueError:
        return None


def to_hex(digest: bytes) -> str:
    return "sha256:" + digest.hex()


def from_hex(text: str) -> bytes:
    """:raises ValueError: when ``text`` is not ``sha256:`` and 64 hex digits."""
    if not text.startswith("sha256:") or len(text) != 71:
        raise ValueError("expected sha256:<64 hex digits>")
    return bytes.fromhex(text[7:])


def export_line(stored: StoredRecord, previous: bytes) -> dict[str, Any]:
    """One JSON Lines entry of an export: the record's fields, ``prev_hash`` and ``hash``."""
    fields: dict[str, Any] = pydantic_core.from_json(stored.record)
    fields["prev_hash"] = to_hex(previous)
    fields["hash"] = to_hex(stored.hash)
    return fields
