"""Binding MCP sessions to the principal that opened them (handshake era).

When an ``initialize`` succeeds and the SDK assigns an ``Mcp-Session-Id``, the session is
bound to the full principal ``(issuer, tenant, subject)``. Every later request that
presents that id must carry a credential of the same principal; otherwise it is answered
exactly like an unknown session (404) and audited in both tenants' streams. A session id
alone never authenticates: authentication runs before this layer on every request.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import anyio
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tenantry.audit.events import AuditEvent
from tenantry.audit.sink import AuditSink
from tenantry.core.calls import Caller
from tenantry.core.errors import SessionNotFound, TenantryError
from tenantry.core.identity import PrincipalKey
from tenantry.server.errors import error_response
from tenantry.server.mcp import CALLER_SCOPE_KEY

__all__ = ["SessionBinding", "BoundSession"]

logger = logging.getLogger(__name__)


@dataclass
class BoundSession:
    owner: PrincipalKey
    tenant_id: str
    subject: str
    opened_at: float
    last_seen: float
    in_flight: int = 0


class SessionBinding:
    def __init__(self, app: ASGIApp, *, audit: AuditSink, idle_timeout: float) -> None:
        self.app = app
        self._audit = audit
        self._idle_timeout = idle_timeout
        self._sessions: dict[str, BoundSession] = {}

    @property
    def sessions(self) -> dict[str, BoundSession]:
        return self._sessions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        caller: Caller = scope[CALLER_SCOPE_KEY]
        headers = Headers(scope=scope)
        version = headers.get("mcp-protocol-version")
        if version is not None and version not in HANDSHAKE_PROTOCOL_VERSIONS:
            await self.app(scope, receive, send)  # sessionless era: nothing to bind
            return
        session_id = headers.get("mcp-session-id")
        if session_id is None:
            await self._serve_opening(scope, receive, send, caller)
            return
        bound = self._sessions.get(session_id)
        if bound is None or bound.owner != caller.principal.key:
            if bound is not None:
                await self._audit_hijack(caller, session_id, bound)
            await error_response(SessionNotFound())(scope, receive, send)
            return
        bound.last_seen = time.monotonic()
        bound.in_flight += 1
        status = 0

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            bound.in_flight -= 1
            bound.last_seen = time.monotonic()
        if scope["method"] == "DELETE" and 200 <= status < 300:
            await self._close(session_id, caller, "client_closed")
        elif status == 404:
            # The SDK no longer knows the session (idle timeout, crash): forget it too.
            await self._close(session_id, caller, "expired")

    async def _serve_opening(self, scope: Scope, receive: Receive, send: Send, caller: Caller) -> None:
        assigned: str | None = None

        async def bind_on_start(message: Message) -> None:
            nonlocal assigned
            if message["type"] == "http.response.start" and message["status"] < 400:
                for key, value in message.get("headers", []):
                    if key.lower() == b"mcp-session-id":
                        assigned = value.decode("latin-1")
                        now = time.monotonic()
                        self._sessions[assigned] = BoundSession(
                            owner=caller.principal.key,
                            tenant_id=caller.tenant_id,
                            subject=caller.principal.subject,
                            opened_at=now,
                            last_seen=now,
                        )
            await send(message)

        await self.app(scope, receive, bind_on_start)
        if assigned is not None:
            await self._record("connection_opened", caller.tenant_id, caller.principal.subject, assigned, caller)

    async def _close(self, session_id: str, caller: Caller | None, reason: str) -> None:
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
        event_type: str,
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
                    event_type=event_type,  # type: ignore[arg-type]
                    tenant_id=tenant_id,
                    result_status="rejected" if event_type == "session_hijack_attempt" else "ok",
                    session_id=session_id,
                    subject=subject,
                    ip_address=caller.client_address if caller is not None and own_address else None,
                    request_id=caller.request_id if caller is not None else None,
                    reason=reason,
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
                await self._close(session_id, None, "idle_timeout")
