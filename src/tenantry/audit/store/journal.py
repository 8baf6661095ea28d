"""Finding the calls a dead server process left between start and outcome (shared by every backend)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pydantic_core

from tenantry.audit.chain import StoredRecord
from tenantry.audit.events import CALL_OUTCOMES, AuditEvent

__all__ = ["interrupted_calls", "open_calls"]

_OUTCOME_TYPES = frozenset(CALL_OUTCOMES.values())


def interrupted_calls(records: Iterable[StoredRecord], instance: str) -> list[AuditEvent]:
    """For every ``call_started`` of ``instance`` among ``records`` with no outcome among them
    (same tenant and ``request_id``), the ``interrupted`` outcome to record."""
    outcomes = []
    for stored, fields in _open_starts(records, instance):
        outcome = interrupted_outcome(stored, fields, instance)
        if outcome is not None:
            outcomes.append(outcome)
    return outcomes


def open_calls(records: Iterable[StoredRecord], instance: str) -> dict[tuple[str, str], float]:
    """The calls ``instance`` started among ``records`` and that have no outcome among them:
    ``(tenant, request_id)`` -> when each started."""
    starts = _open_starts(records, instance)
    return {(stored.tenant_id, str(fields["request_id"])): stored.created for stored, fields in starts}


def _open_starts(records: Iterable[StoredRecord], instance: str) -> list[tuple[StoredRecord, dict[str, Any]]]:
    starts: dict[tuple[str, str], tuple[StoredRecord, dict[str, Any]]] = {}
    closed: set[tuple[str, str]] = set()
    for stored in records:
        try:
            fields: dict[str, Any] = pydantic_core.from_json(stored.record)
        except ValueError:
            continue
        request_id = fields.get("request_id")
        if not isinstance(request_id, str):
            continue
        key = (stored.tenant_id, request_id)
        kind = fields.get("event_type")
        detail = fields.get("detail")
        if kind == "call_started" and isinstance(detail, dict) and detail.get("instance") == instance:
            starts[key] = (stored, fields)
        elif kind in _OUTCOME_TYPES:
            closed.add(key)
    return [start for key, start in starts.items() if key not in closed]


def interrupted_outcome(start: StoredRecord, fields: dict[str, Any], instance: str) -> AuditEvent | None:
    """The outcome recorded for a call whose process died between its start and its outcome."""
    detail = fields.get("detail")
    method = detail.get("method") if isinstance(detail, dict) else None
    outcome = CALL_OUTCOMES.get(method) if isinstance(method, str) else None
    if outcome is None:
        return None

    def text(name: str) -> str | None:
        value = fields.get(name)
        return value if isinstance(value, str) else None

    return AuditEvent(
        event_type=outcome,
        tenant_id=start.tenant_id,
        result_status="interrupted",
        session_id=text("session_id"),
        subject=text("subject"),
        tool_name=text("tool_name"),
        args_hash=text("args_hash"),
        ip_address=text("ip_address"),
        request_id=text("request_id"),
        reason="the server stopped before the call's outcome was recorded; the tool may have run",
        actor="tenantry:recovery",
        detail={"started_seq": start.seq, "instance": instance},
    )
