"""Audit events: one record per security-relevant event, never carrying raw arguments."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, Literal

import rfc8785

__all__ = ["AuditEvent", "EventType", "ResultStatus", "args_hash", "SYSTEM_STREAM", "utc_now_iso"]

SYSTEM_STREAM = "_system"
"""Stream for events that belong to no tenant (credentials that never verified)."""

EventType = Literal[
    "connection_opened",
    "connection_closed",
    "connection_rejected",
    "tool_call_started",
    "tool_call",
    "tool_denied",
    "resource_read",
    "prompt_get",
    "access_denied",
    "session_hijack_attempt",
    "token_issued",
    "token_revoked",
    "key_rotated",
    "tenant_created",
    "tenant_granted",
    "tenant_ungranted",
    "tenant_halted",
    "tenant_resumed",
    "admin_action",
]
ResultStatus = Literal["ok", "error", "denied", "rejected", "timeout", "input_required"]


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def args_hash(arguments: Any) -> str:
    """``sha256:`` over the RFC 8785 canonical JSON of the arguments (never the arguments themselves)."""
    try:
        canonical = rfc8785.dumps(arguments if arguments is not None else {})
    except (rfc8785.CanonicalizationError, TypeError, ValueError):
        canonical = repr(arguments).encode()
    return "sha256:" + hashlib.sha256(canonical).hexdigest()


@dataclass(frozen=True, slots=True)
class AuditEvent:
    event_type: EventType
    tenant_id: str
    result_status: ResultStatus
    session_id: str | None = None
    subject: str | None = None
    tool_name: str | None = None
    args_hash: str | None = None
    latency_ms: float | None = None
    ip_address: str | None = None
    request_id: str | None = None
    reason: str | None = None
    actor: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    timestamp: str = field(default_factory=utc_now_iso)

    def to_dict(self) -> dict[str, Any]:
        # Hand-rolled: dataclasses.asdict deep-copies recursively and sits on every tool call.
        return {name: getattr(self, name) for name in _FIELDS}


_FIELDS = tuple(f.name for f in fields(AuditEvent))
