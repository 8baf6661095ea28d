"""Binding MCP sessions to the principal that opened them (handshake era).

When an ``initialize`` succeeds and the SDK assigns an ``Mcp-Session-Id``, the session is
bound to the full principal ``(issuer, tenant, subject)``. Every later request that
presents that id must carry a credential of the same principal; otherwise it is answered
exactly like an unknown session (404) and audited in both tenants' streams. A session id
alone never authenticates: authentication runs first, on every request.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import anyio

from tenantry.audit.events import AuditEvent, EventType
from tenantry.audit.sink import AuditSink
from tenantry.core.calls import Caller
from tenantry.core.errors import SessionNotFound, TenantryError
from tenantry.core.identity import PrincipalKey

__all__ = ["SessionRegistry", "BoundSession"]

logger = logging.getLogger(__name__)


@dataclass
class BoundSession:
    owner: PrincipalKey
    tenant_id: str
    subject: str
    opened_at: float
    last_seen: float
    in_flight: int = 0


class SessionRegistry:
    def __init__(self, *, audit: AuditSink, idle_timeout: float) -> None:
        self._audit = audit
        self._idle_timeout = idle_timeout
        self._sessions: dict[str, BoundSession] = {}

    @property
    def sessions(self) -> dict[str, BoundSession]:
        return self._sessions

    async def claim(self, session_id: str, caller: Caller) -> BoundSession:
        """The session ``caller`` presented, if it is theirs.

        :raises SessionNotFound: unknown, or owned by another principal (audited, indistinguishable).
        """
        bound = self._sessions.get(session_id)
        if bound is None:
            raise SessionNotFound()
        if bound.owner != caller.principal.key:
            await self._audit_hijack(caller, session_id, bound)
            raise SessionNotFound()
        bound.last_seen = time.monotonic()
        return bound

    def bind(self, session_id: str, caller: Caller) -> None:
        """Bind a session the SDK just created to its principal. Called before the response that
        reveals the id is sent, so the client's next request always finds the binding."""
        now = time.monotonic()
        self._sessions[session_id] = BoundSession(
            owner=caller.principal.key,
            tenant_id=caller.tenant_id,
            subject=caller.principal.subject,
            opened_at=now,
            last_seen=now,
        )

    async def record_opened(self, session_id: str, caller: Caller) -> None:
        await self._record("connection_opened", caller.tenant_id, caller.principal.subject, session_id, caller)

    async def close(self, session_id: str, caller: Caller | None, reason: str) -> None:
        bound = self._sessions.pop(session_id, None)
        if bound is None:
            return
        await self._record("connection_closed", bound.tenant_id, bound.subject, session_id, caller, reason=reason)

    async def _audit_hijack(self, caller: Caller, session_id: str, bound: BoundSession) -> None:
        await self._record(
            "session_hijack_attempt",
            caller.tenant_id,
            caller.principal.subject,
            session_id,
            caller,
            reason="session belongs to another principal",
        )
        await self._record(
            "session_hijack_attempt",
            bound.tenant_id,
            bound.subject,
            session_id,
            caller,
            reason="another principal presented this session id",
            own_address=False,
        )

    async def _record(
        self,
        event_type: EventType,
        tenant_id: str,
        subject: str | None,
        session_id: str,
        caller: Caller | None,
        *,
        reason: str | None = None,
        own_address: bool = True,
    ) -> None:
        try:
            await self._audit.record(
                AuditEvent(
                    event_type=event_type,
                    tenant_id=tenant_id,
                    result_status="rejected" if event_type == "session_hijack_attempt" else "ok",
                    session_id=session_id,
                    subject=subject,
                    ip_address=caller.client_address if caller is not None and own_address else None,
                    request_id=caller.request_id if caller is not None else None,
                    reason=reason,
                    principal=caller.principal if caller is not None and own_address else None,
                )
            )
        except TenantryError:
            logger.warning("could not audit a session event", extra={"session_id": session_id})

    async def reap_idle(self) -> None:
        """Forget sessions idle longer than the SDK keeps them; runs until cancelled."""
        interval = max(1.0, min(60.0, self._idle_timeout / 4))
        while True:
            await anyio.sleep(interval)
            deadline = time.monotonic() - self._idle_timeout - interval
            stale = [sid for sid, b in self._sessions.items() if b.in_flight == 0 and b.last_seen < deadline]
            for session_id in stale:
                await self.close(session_id, None, "idle_timeout")
