"""What an append does to the journal of open calls (shared by every backend)."""

from __future__ import annotations

from collections.abc import Sequence

from tenantry.audit.chain import StoredRecord
from tenantry.audit.events import CALL_OUTCOMES, AuditEvent

__all__ = ["open_and_closed_calls"]

_OUTCOME_TYPES = frozenset(CALL_OUTCOMES.values())


def open_and_closed_calls(
    events: Sequence[AuditEvent], stored: Sequence[StoredRecord], instance: str | None
) -> tuple[list[tuple[str, str, str, int]], list[tuple[str, str]]]:
    """Rows to insert ``(tenant_id, request_id, instance, seq)`` for starts, and keys to delete
    ``(tenant_id, request_id)`` for outcomes, in the order of ``events``."""
    opened: list[tuple[str, str, str, int]] = []
    closed: list[tuple[str, str]] = []
    for event, record in zip(events, stored, strict=True):
        if event.request_id is None:
            continue
        if event.event_type == "call_started":
            if instance is not None:
                opened.append((event.tenant_id, event.request_id, instance, record.seq))
        elif event.event_type in _OUTCOME_TYPES:
            closed.append((event.tenant_id, event.request_id))
    return opened, closed
