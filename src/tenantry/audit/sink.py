"""The seam every allow/deny decision and connection event goes through."""

from __future__ import annotations

import json
import logging
from typing import Protocol

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
    """Writes each event as one structured log line on the ``tenantry.audit`` logger.

    Not tamper-evident and not durable beyond the log pipeline: the foundation's stand-in
    until the hash-chained store lands. It already carries every field, hashes only.
    """

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._logger = logger or logging.getLogger("tenantry.audit")

    async def record(self, event: AuditEvent) -> None:
        fields = {k: v for k, v in event.to_dict().items() if v not in (None, {})}
        self._logger.info("audit %s", event.event_type, extra={"audit": fields, "tenant_id": event.tenant_id})

    async def aclose(self) -> None:
        return None

    @staticmethod
    def render(event: AuditEvent) -> str:
        return json.dumps(event.to_dict(), sort_keys=True, separators=(",", ":"))
