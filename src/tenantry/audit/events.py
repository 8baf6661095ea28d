"""Audit events: one record per security-relevant event, never carrying raw arguments."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, Literal

import pydantic_core
import rfc8785

from tenantry.core.bounded import FIELD_LIMIT, NAME_LIMIT, bounded_text
from tenantry.core.identity import Principal

__all__ = [
    "AuditEvent",
    "EventType",
    "ResultStatus",
    "CALL_OUTCOMES",
    "args_hash",
    "SYSTEM_STREAM",
    "utc_now_iso",
    "iso_timestamp",
]

SYSTEM_STREAM = "_system"
"""Stream for events that belong to no tenant (credentials that never verified)."""

EventType = Literal[
    "connection_opened",
    "connection_closed",
    "connection_rejected",
    "call_started",
    "tool_call",
    "tool_denied",
    "resource_read",
    "prompt_get",
    "access_denied",
    "session_hijack_attempt",
    "token_issued",
    "token_refused",
    "token_revoked",
    "api_key_created",
    "api_key_revoked",
    "key_rotated",
    "key_retired",
    "tenant_created",
    "tenant_granted",
    "tenant_ungranted",
    "tenant_halted",
    "tenant_limits_changed",
    "tenant_resumed",
    "tenant_moved",
    "worker_crashed",
    "secret_set",
    "secret_deleted",
    "upstream_added",
    "upstream_removed",
    "tenant_key_shredded",
    "tenant_exported",
    "tenant_deletion_started",
    "tenant_deleted",
    "audit_exported",
    "audit_purged",
    "anomaly_alert",
    "admin_action",
]
ResultStatus = Literal[
    "ok", "error", "denied", "rejected", "timeout", "cancelled", "input_required", "started", "interrupted"
]

CALL_OUTCOMES: dict[str, EventType] = {
    "tools/call": "tool_call",
    "resources/read": "resource_read",
    "prompts/get": "prompt_get",
}
"""A ``call_started`` record's ``detail.method`` -> the event type of the outcome that closes it."""


def utc_now_iso() -> str:
    return iso_timestamp(time.time())


_SECOND_PREFIX: dict[int, str] = {}


def iso_timestamp(epoch: float) -> str:
    """UTC, ISO 8601 with microseconds and a ``Z``: ``2026-11-26T12:00:00.123456Z``."""
    second = int(epoch)
    prefix = _SECOND_PREFIX.get(second)
    if prefix is None:  # formatting the date part once per second keeps this off the profile
        prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        if len(_SECOND_PREFIX) > 8:
            _SECOND_PREFIX.clear()
        _SECOND_PREFIX[second] = prefix
    return f"{prefix}.{int((epoch - second) * 1_000_000):06d}Z"


_MAX_SAFE_INTEGER = 2**53 - 1
_NOT_PLAIN = object()


def _sorted_plain(value: Any) -> Any:
    """``value`` with every object's keys in RFC 8785 order, or ``_NOT_PLAIN``.

    Plain means: strings, booleans, ``None``, integers within IEEE-754's exact range, and
    lists and objects of those whose keys have no characters outside the BMP (Python sorts
    keys by code point, RFC 8785 by UTF-16 unit; the two orders differ only for astral
    characters). For plain values a compact JSON encoder already produces RFC 8785 output.
    Floats are plain when not integral and between 1e-4 and 1e16 in magnitude: there Python's
    ``repr`` and ECMAScript's number formatting agree digit for digit (both are the shortest
    round-trip form and neither switches to exponent notation).
    """
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return value
    if kind is int:
        return value if -_MAX_SAFE_INTEGER <= value <= _MAX_SAFE_INTEGER else _NOT_PLAIN
    if kind is float:
        magnitude = abs(value)
        return value if 1e-4 <= magnitude < 1e16 and not value.is_integer() else _NOT_PLAIN
    if kind is dict:
        ordered = {}
        for key in sorted(value):
            if type(key) is not str or not (key.isascii() or max(key) < "\U00010000"):
                return _NOT_PLAIN
            item = _sorted_plain(value[key])
            if item is _NOT_PLAIN:
                return _NOT_PLAIN
            ordered[key] = item
        return ordered
    if kind is list:
        items = [_sorted_plain(item) for item in value]
        return _NOT_PLAIN if any(item is _NOT_PLAIN for item in items) else items
    return _NOT_PLAIN


def canonical_json(value: Any) -> bytes:
    """RFC 8785 (JSON Canonicalization Scheme) encoding, with a fast path for plain values.

    :raises ValueError: for values JSON cannot carry (NaN, infinities, integers beyond 2**53).
    """
    ordered = _sorted_plain(value)
    if ordered is not _NOT_PLAIN:
        return pydantic_core.to_json(ordered)
    try:
        return rfc8785.dumps(value)
    except rfc8785.CanonicalizationError as exc:
        raise ValueError(str(exc)) from None


_EMPTY_HASH = "sha256:" + hashlib.sha256(b"{}").hexdigest()


def args_hash(arguments: Any) -> str:
    """``sha256:`` over the RFC 8785 canonical JSON of the arguments (never the arguments themselves)."""
    if not arguments:
        return _EMPTY_HASH
    try:
        canonical = canonical_json(arguments)
    except (TypeError, ValueError):
        canonical = repr(arguments).encode()
    return "sha256:" + hashlib.sha256(canonical).hexdigest()


@dataclass(slots=True)
class AuditEvent:
    """One audited event. Built on every tool call, so deliberately plain (not frozen)."""

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
    created: float = field(default_factory=time.time)
    """Seconds since the epoch; rendered as :attr:`timestamp`."""
    principal: Principal | None = field(default=None, repr=False, compare=False)
    """Who caused the event, for observers in this process (anomaly detection, automatic
    response); never recorded. Events a principal did not cause itself (e.g. the copy of a
    hijack attempt in the victim's stream) leave it unset, so they never count against it."""

    def __post_init__(self) -> None:
        # Every string a caller can influence is bounded once, here, so the store, the log
        # lines, the alerts and `audit tail` all see the same safe value.
        if self.tool_name is not None:
            self.tool_name = bounded_text(self.tool_name, NAME_LIMIT)
        if self.subject is not None:
            self.subject = bounded_text(self.subject, FIELD_LIMIT)
        if self.session_id is not None:
            self.session_id = bounded_text(self.session_id, NAME_LIMIT)
        if self.ip_address is not None:
            self.ip_address = bounded_text(self.ip_address, NAME_LIMIT)
        if self.request_id is not None:
            self.request_id = bounded_text(self.request_id, NAME_LIMIT)
        if self.reason is not None:
            self.reason = bounded_text(self.reason, REASON_LIMIT)
        if self.actor is not None:
            self.actor = bounded_text(self.actor, FIELD_LIMIT)
        if self.detail:
            self.detail = _bounded_detail(self.detail, 0)

    @property
    def timestamp(self) -> str:
        return iso_timestamp(self.created)

    def present_fields(self) -> dict[str, Any]:
        """Like :meth:`to_dict` without the fields that are unset (``None`` or empty)."""
        record: dict[str, Any] = {}
        for name in _FIELDS:
            value = getattr(self, name)
            if value is not None and value != {}:
                record[name] = value
        record["timestamp"] = iso_timestamp(record.pop("created"))
        return record

    def to_dict(self) -> dict[str, Any]:
        """The record's fields with ``timestamp`` as UTC ISO 8601."""
        # Hand-rolled: dataclasses.asdict deep-copies recursively and sits on every tool call.
        record = {name: getattr(self, name) for name in _FIELDS}
        record["timestamp"] = iso_timestamp(record.pop("created"))
        return record


_FIELDS = tuple(f.name for f in fields(AuditEvent) if f.name != "principal")

REASON_LIMIT = 1024
_DETAIL_ITEMS = 64
_DETAIL_DEPTH = 4


def _bounded_detail(value: Any, depth: int) -> Any:
    kind = type(value)
    if kind is str:
        return bounded_text(value, FIELD_LIMIT)
    if kind is dict:
        if depth >= _DETAIL_DEPTH:
            return "[nested too deep]"
        items = list(value.items())
        bounded = {bounded_text(str(k), NAME_LIMIT): _bounded_detail(v, depth + 1) for k, v in items[:_DETAIL_ITEMS]}
        if len(items) > _DETAIL_ITEMS:
            bounded["_truncated"] = len(items) - _DETAIL_ITEMS
        return bounded
    if kind is list or kind is tuple:
        if depth >= _DETAIL_DEPTH:
            return "[nested too deep]"
        kept = [_bounded_detail(v, depth + 1) for v in value[:_DETAIL_ITEMS]]
        if len(value) > _DETAIL_ITEMS:
            kept.append(f"[{len(value) - _DETAIL_ITEMS} more]")
        return kept
    return value
