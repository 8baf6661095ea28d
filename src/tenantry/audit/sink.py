"""The seam every allow/deny decision and connection event goes through."""

from __future__ import annotations

from typing import Protocol

from tenantry.audit.events import AuditEvent

__all__ = ["AuditSink", "AuditObserver"]


class AuditSink(Protocol):
    """Records audit events.

    ``record`` returns only once the event is as durable as the sink promises; the
    dispatcher awaits it before a tool call's result is returned. ``ensure_writable`` is
    the cheap check made before a tool runs, so that a call fails closed instead of
    running while the store is known to be unable to record it.

    :raises AuditUnavailable: when the event cannot be recorded (callers fail closed).
    """

    def ensure_writable(self) -> None:
        """:raises AuditUnavailable: when the sink cannot currently record events."""
        ...

    async def record(self, event: AuditEvent, *, alone: bool = False) -> None:
        """Record ``event`` durably. ``alone`` is a hint that no other call is in flight."""
        ...

    def add_observer(self, observer: AuditObserver) -> None:
        """Call ``observer.observe(event)`` for every event once it is durable."""
        ...

    async def aclose(self) -> None: ...


class AuditObserver(Protocol):
    """Sees every event once it is durable (metrics, anomaly detection). Must be cheap and
    must not raise; it runs on the event loop."""

    def observe(self, event: AuditEvent) -> None: ...
