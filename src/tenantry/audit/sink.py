"""The seam every allow/deny decision and connection event goes through."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Protocol

from tenantry.audit.events import AuditEvent

__all__ = ["AuditSink", "AuditObserver"]


class AuditSink(Protocol):
    """Records audit events.

    ``record`` returns only once the event is as durable as the sink promises; the
    dispatcher awaits it for a call's start, before the tool runs. ``ensure_writable`` is
    the cheap check made before a tool runs, so that a call fails closed instead of
    running while the store is known to be unable to record it.

    :raises AuditUnavailable: when the event cannot be recorded (callers fail closed).
    """

    committed: int
    """Records made durable so far (a metric)."""
    batches: int
    """Transactions (or writer answers) so far (a metric)."""

    @property
    def available(self) -> bool:
        """Whether the sink can currently record events (cheap; checked before and after a call)."""
        ...

    def ensure_writable(self) -> None:
        """:raises AuditUnavailable: when the sink cannot currently record events."""
        ...

    def submit(self, event: AuditEvent) -> None:
        """Record ``event`` with the next transaction without waiting for it (a call's outcome,
        whose start is already durable). Never raises: while the store is unavailable the event
        is kept durably elsewhere and written once it recovers."""
        ...

    async def record(self, event: AuditEvent) -> None:
        """Record ``event`` durably (the event loop is free meanwhile: no commit runs on it)."""
        ...

    def begin(self, event: AuditEvent) -> Awaitable[None]:
        """Hand ``event`` to the writer now and return what completes once it is durable (a
        call's start is committed while the tool's own code runs).

        :raises AuditUnavailable: when the event will not be recorded (at once)."""
        ...

    def add_observer(self, observer: AuditObserver) -> None:
        """Call ``observer.observe(event)`` for every event once it is durable."""
        ...

    async def aclose(self) -> None: ...


class AuditObserver(Protocol):
    """Sees every event once it is durable (metrics, anomaly detection). Must be cheap and
    must not raise; it runs on the event loop."""

    def observe(self, event: AuditEvent) -> None: ...
