"""The seam every allow/deny decision and connection event goes through."""

from __future__ import annotations

import sys
import threading
from typing import Protocol, TextIO

import pydantic_core

from tenantry.audit.events import AuditEvent

__all__ = ["AuditSink", "LogAuditSink"]


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

    async def record(self, event: AuditEvent) -> None: ...

    async def aclose(self) -> None: ...


class LogAuditSink:
    """Writes each event as one structured JSON log line (logger ``tenantry.audit``).

    Not tamper-evident and not durable beyond the log pipeline: the foundation's stand-in
    until the hash-chained store lands. It already carries every field, hashes only.
    Lines share the shape of the other structured logs but are written directly: the
    logging machinery would cost more than the tool call itself.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def ensure_writable(self) -> None:
        return None

    async def record(self, event: AuditEvent) -> None:
        fields = event.present_fields()
        line = pydantic_core.to_json(
            {
                "ts": fields["timestamp"],
                "level": "info",
                "logger": "tenantry.audit",
                "msg": "audit",
                "tenant_id": event.tenant_id,
                "audit": fields,
            },
            fallback=str,
        ).decode()
        stream = self._stream or sys.stderr
        with self._lock:
            stream.write(line + "\n")
            stream.flush()

    async def aclose(self) -> None:
        return None
