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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import anyio

from tenantry.audit.events import AuditEvent, EventType
from tenantry.audit.sink import AuditSink
from tenantry.core.addresses import address_bucket
from tenantry.core.calls import Caller
from tenantry.core.errors import SessionLimitReached, SessionNotFound, TenantryError
from tenantry.core.identity import PrincipalKey
from tenantry.core.limits import TenantLimits
from tenantry.ratelimit.record_budget import RecordBudget

__all__ = ["SessionRegistry", "BoundSession", "SessionCloser"]

logger = logging.getLogger(__name__)


@dataclass
class BoundSession:
    owner: PrincipalKey
    tenant_id: str
    subject: str
    opened_at: float
    last_seen: float
    in_flight: int = 0
    streams: int = 0
    """Of ``in_flight``, the session's standalone GET streams: nothing on them waits for an answer."""
    request_ids: set[str] = field(default_factory=set)
    """The JSON-RPC ids of the session's requests in flight (``str`` of the id, the SDK's own key)."""


SessionCloser = Callable[[str], Awaitable[None]]
"""Ends the transport (and server task) of a session id, e.g. in the SDK's session manager."""


class SessionRegistry:
    """:param limits_for: a tenant's effective limits (``sessions``, ``session_idle``).
    :param closer: ends a session's transport when the registry closes it (idle, halted tenant).
    :param on_closed: told the id of every session closed (by its client, idle, halted tenant).
    :param budget: how many hijack-attempt records one client address may cause per stream; the
        rest are counted and summarised (:meth:`record_suppressed`). Presenting a session id of
        another principal costs the presenter one request, so it must not cost the server an
        unbounded number of durable records (two per attempt, one in each tenant's stream).
    """

    def __init__(
        self,
        *,
        audit: AuditSink,
        idle_timeout: float,
        limits_for: Callable[[str], TenantLimits] | None = None,
        closer: SessionCloser | None = None,
        budget: RecordBudget | None = None,
        on_closed: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self._audit = audit
        self._budget = budget or RecordBudget()
        self._idle_timeout = idle_timeout
        self._limits_for = limits_for or (lambda tenant_id: TenantLimits(session_idle=idle_timeout))
        self._closer = closer
        self._on_closed = on_closed
        self._sessions: dict[str, BoundSession] = {}
        self._per_tenant: dict[str, int] = {}
        self._opening: dict[str, int] = {}

    @property
    def sessions(self) -> dict[str, BoundSession]:
        return self._sessions

    def open_count(self, tenant_id: str) -> int:
        return self._per_tenant.get(tenant_id, 0)

    def reserve(self, tenant_id: str) -> None:
        """Hold a place for a session the tenant is opening (before the SDK creates it).

        :raises SessionLimitReached: the tenant already has its limit of sessions open.
        """
        limit = self._limits_for(tenant_id).sessions
        if self._per_tenant.get(tenant_id, 0) + self._opening.get(tenant_id, 0) >= limit:
            raise SessionLimitReached(
                f"this tenant already has {limit} open sessions (its limit); close one (DELETE) or let it expire",
                retry_after=60,
            )
        self._opening[tenant_id] = self._opening.get(tenant_id, 0) + 1

    def unreserve(self, tenant_id: str) -> None:
        count = self._opening.get(tenant_id, 0) - 1
        if count > 0:
            self._opening[tenant_id] = count
        else:
            self._opening.pop(tenant_id, None)

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
        if session_id not in self._sessions:
            self._per_tenant[caller.tenant_id] = self._per_tenant.get(caller.tenant_id, 0) + 1
        self._sessions[session_id] = BoundSession(
            owner=caller.principal.key,
            tenant_id=caller.tenant_id,
            subject=caller.principal.subject,
            opened_at=now,
            last_seen=now,
        )

    async def record_opened(self, session_id: str, caller: Caller) -> None:
        await self._record("connection_opened", caller.tenant_id, caller.principal.subject, session_id, caller)

    async def close(self, session_id: str, caller: Caller | None, reason: str, *, end_transport: bool = False) -> None:
        bound = self._sessions.pop(session_id, None)
        if bound is None:
            return
        count = self._per_tenant.get(bound.tenant_id, 0) - 1
        if count > 0:
            self._per_tenant[bound.tenant_id] = count
        else:
            self._per_tenant.pop(bound.tenant_id, None)
        if end_transport and self._closer is not None:
            try:
                await self._closer(session_id)
            except Exception:
                logger.exception("could not end a session's transport", extra={"session_id": session_id})
        if self._on_closed is not None:
            try:
                await self._on_closed(session_id)
            except Exception:
                logger.exception("could not release a closed session's state", extra={"session_id": session_id})
        await self._record("connection_closed", bound.tenant_id, bound.subject, session_id, caller, reason=reason)

    async def close_tenant(self, tenant_id: str, reason: str, *, grace: float = 2.0) -> int:
        """Close every session of the tenant (its kill switch); returns how many.

        The halt has just cancelled the tenant's calls in flight, and each still has to send its
        ``call_cancelled`` answer on its session: the transports end once those requests are
        done, or after ``grace`` seconds. New requests are refused meanwhile (the tenant is
        halted), so the wait is bounded by what was already running.
        """
        ids = [sid for sid, bound in self._sessions.items() if bound.tenant_id == tenant_id]
        busy = [self._sessions[sid] for sid in ids]
        deadline = time.monotonic() + grace
        # A standalone GET stream has no answer to send: only requests are waited for.
        while any(b.in_flight > b.streams for b in busy) and time.monotonic() < deadline:  # noqa: ASYNC110
            await anyio.sleep(0.01)  # the counts change in the requests' own tasks: no event to wait on
        for session_id in ids:
            await self.close(session_id, None, reason, end_transport=True)
        return len(ids)

    async def _audit_hijack(self, caller: Caller, session_id: str, bound: BoundSession) -> None:
        source = "addr:" + address_bucket(caller.client_address) if caller.client_address else "unknown"
        if self._budget.admit(caller.tenant_id, source):
            await self._record(
                "session_hijack_attempt",
                caller.tenant_id,
                caller.principal.subject,
                session_id,
                caller,
                reason="session belongs to another principal",
            )
        if self._budget.admit(bound.tenant_id, source):
            await self._record(
                "session_hijack_attempt",
                bound.tenant_id,
                bound.subject,
                session_id,
                caller,
                reason="another principal presented this session id",
                own_address=False,
            )

    async def record_suppressed(self) -> None:
        """One summary record per stream for the hijack attempts over the record budget since last time."""
        for stream, counts in self._budget.take_suppressed().items():
            total = sum(counts.values())
            try:
                await self._audit.record(
                    AuditEvent(
                        event_type="session_hijack_attempt",
                        tenant_id=stream,
                        result_status="rejected",
                        reason=f"{total} further attempts to use another principal's session not recorded one by one"
                        " (audit record budget)",
                        detail={"suppressed": total, "sources": len(counts)},
                    )
                )
            except TenantryError:
                logger.warning("could not audit suppressed hijack attempts", extra={"tenant_id": stream})

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
        """Close sessions idle longer than their tenant's ``session_idle``; runs until cancelled."""
        interval = 2.0  # per-tenant idle limits may be short; a sweep is a pass over a dict
        while True:
            await anyio.sleep(interval)
            await self.reap_once()

    async def reap_once(self, now: float | None = None) -> int:
        current = time.monotonic() if now is None else now
        stale = [
            sid
            for sid, bound in self._sessions.items()
            if bound.in_flight == 0 and bound.last_seen < current - self._limits_for(bound.tenant_id).session_idle
        ]
        for session_id in stale:
            await self.close(session_id, None, "idle_timeout", end_transport=True)
        return len(stale)
