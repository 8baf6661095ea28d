"""The seam every allow/deny decision and connection event goes through."""

from __future__ import annotations

import json
import sys
import threading
from datetime import UTC, datetime
from typing import Protocol, TextIO

from tenantry.audit.events import AuditEvent

__all__ = ["AuditSink", "LogAuditSink"]


class AuditSink(Protocol):
    """Records audit events.

    ``record`` returns only once the event is as durable as the sink promises; a caller
    that must not proceed unaudited awaits it before acting.

    :raises AuditUnavailable: when the event cannot be recorded (callers fail closed).
    """

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

    async def record(self, event: AuditEvent) -> None:
        fields = {k: v for k, v in event.to_dict().items() if v is not None and v != {}}
        line = json.dumps(
            {
                "ts": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                "level": "info",
                "logger": "tenantry.audit",
                "msg": f"audit {event.event_type}",
                "tenant_id": event.tenant_id,
                "audit": fields,
            },
            default=str,
            separators=(",", ":"),
        )
        stream = self._stream or sys.stderr
        with self._lock:
            stream.write(line + "\n")
            stream.flush()

    async def aclose(self) -> None:
        return None
