"""Handshake-era sessions' subscriptions to upstream resources, and the updates pushed to them.

A session subscribes (``resources/subscribe``) to an upstream resource it can see, by its exposed
URI ``upstream://<upstream>/<uri>``; the calling tenant's own session with that upstream then
subscribes to the upstream's ``<uri>`` (the gateway counts the tenant's sessions, so it subscribes
once and unsubscribes when the last one goes; see :class:`UpstreamRelay`). An update the upstream
sends on tenant T's session reaches the sessions *of T* subscribed to that URI, and only those
that can still see it (checked again at each update): never another tenant's.

Bounded: at most ``per_session`` URIs per session and ``per_tenant`` per tenant (beyond, the
subscribe is refused with an explanation); at most ``max_fanout`` sessions told per update, each
given a second (a stuck client does not hold up the others); updates of one (tenant, URI) are
sent at most once per ``interval`` seconds, later ones within it coalesced into one sent at its
end. An update for a URI no session of the tenant subscribed to is ignored.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio

from tenantry.core.calls import Caller
from tenantry.core.errors import TenantryError, UsageError
from tenantry.core.identity import Principal
from tenantry.core.upstreams import original_uri

__all__ = ["Subscriptions", "UpstreamRelay"]

logger = logging.getLogger(__name__)


class UpstreamRelay(Protocol):
    async def subscribe_resource(self, upstream: str, tenant_id: str, uri: str) -> None:
        """One more session of ``tenant_id`` subscribes to ``upstream``'s own ``uri``."""

    async def unsubscribe_resource(self, upstream: str, tenant_id: str, uri: str) -> None:
        """One session of ``tenant_id`` no longer subscribes to it (best effort, never raises)."""


@dataclass
class _Session:
    tenant_id: str
    caller: Caller
    connection: weakref.ref[Any]
    uris: dict[str, str] = field(default_factory=dict)
    """exposed URI -> the upstream serving it."""


class Subscriptions:
    """:param visible: whether a caller can see a URI now (the dispatcher's ``resource_visible``).
    :param lapsed: why a subscriber's credential no longer counts (expired, revoked, its tenant
        halted), or ``None``: such a session is told nothing more and its subscriptions are released.
    """

    def __init__(
        self,
        relay: UpstreamRelay,
        visible: Callable[[Caller, str], bool],
        *,
        lapsed: Callable[[Principal], str | None] = lambda _: None,
        per_session: int = 100,
        per_tenant: int = 1_000,
        max_fanout: int = 1_000,
        interval: float = 0.5,
        send_timeout: float = 1.0,
    ) -> None:
        self._relay = relay
        self._visible = visible
        self._lapsed = lapsed
        self._per_session = per_session
        self._per_tenant_limit = per_tenant
        self._max_fanout = max_fanout
        self._interval = interval
        self._send_timeout = send_timeout
        self._sessions: dict[str, _Session] = {}
        self._per_tenant: dict[str, int] = {}
        self._subscribers: dict[tuple[str, str], set[str]] = {}
        """(tenant, exposed URI) -> the ids of the tenant's sessions subscribed to it."""
        self._pending: set[tuple[str, str]] = set()
        self._last_sent: dict[tuple[str, str], float] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def subscribed(self, session_id: str) -> set[str]:
        session = self._sessions.get(session_id)
        return set(session.uris) if session is not None else set()

    async def subscribe(self, caller: Caller, connection: Any, upstream: str, uri: str) -> None:
        """Subscribe ``caller``'s session to ``upstream``'s resource exposed as ``uri`` (already
        found visible to ``caller``). Subscribing again to the same URI changes nothing.

        :raises UsageError: the session's or the tenant's limit of subscriptions is reached.
        :raises TenantryError: the upstream refused or could not be reached (nothing is kept).
        """
        session_id, tenant_id = caller.session_id, caller.tenant_id
        own = original_uri(upstream, uri)
        if session_id is None or own is None:
            return
        session = self._sessions.get(session_id)
        if session is not None and session.tenant_id != tenant_id:
            raise UsageError("this session belongs to another principal")  # sessions are bound; never happens
        if session is not None and uri in session.uris:
            session.caller = caller
            return
        if session is not None and len(session.uris) >= self._per_session:
            raise UsageError(
                f"this session already has {self._per_session} resource subscriptions (the limit per session);"
                " unsubscribe from one first"
            )
        if self._per_tenant.get(tenant_id, 0) >= self._per_tenant_limit:
            raise UsageError(
                f"this tenant already has {self._per_tenant_limit} resource subscriptions across its sessions"
                " (the limit per tenant); unsubscribe from some first"
            )
        if session is None:
            session = self._sessions[session_id] = _Session(tenant_id, caller, weakref.ref(connection))
        session.caller, session.connection = caller, weakref.ref(connection)
        self._add(session_id, session, uri, upstream)  # claimed before the await: the bounds hold
        try:
            await self._relay.subscribe_resource(upstream, tenant_id, own)
        except BaseException:
            self._remove(session_id, session, uri)
            raise

    async def unsubscribe(self, session_id: str, uri: str) -> None:
        """Release the session's subscription to ``uri`` (nothing if it has none)."""
        session = self._sessions.get(session_id)
        if session is None or uri not in session.uris:
            return
        upstream = self._remove(session_id, session, uri)
        await self._release(upstream, session.tenant_id, uri)

    async def release_session(self, session_id: str) -> None:
        """The session ended: release every subscription it had."""
        session = self._sessions.get(session_id)
        if session is None:
            return
        for uri in list(session.uris):
            upstream = self._remove(session_id, session, uri)
            await self._release(upstream, session.tenant_id, uri)

    def updated(self, tenant_id: str, uri: str) -> None:
        """An upstream said the resource exposed as ``uri`` changed, on ``tenant_id``'s behalf:
        tell the tenant's subscribed sessions (in the background; coalesced within ``interval``)."""
        key = (tenant_id, uri)
        if key not in self._subscribers or key in self._pending:
            return
        self._pending.add(key)
        task = asyncio.get_running_loop().create_task(self._deliver(key))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, key: tuple[str, str]) -> None:
        try:
            wait = self._last_sent.get(key, -self._interval) + self._interval - time.monotonic()
            if wait > 0:
                await anyio.sleep(wait)
        finally:
            self._pending.discard(key)
        tenant_id, uri = key
        subscribers = self._subscribers.get(key)
        if subscribers is None:
            return
        self._last_sent[key] = time.monotonic()
        targets: list[Any] = []
        dead: list[str] = []
        for session_id in sorted(subscribers)[: self._max_fanout]:
            session = self._sessions.get(session_id)
            if session is None or session.tenant_id != tenant_id:
                continue
            connection = session.connection()
            if connection is None or self._lapsed(session.caller.principal) is not None:
                dead.append(session_id)
            elif self._still_visible(session.caller, uri):
                targets.append(connection)
        async with anyio.create_task_group() as tasks:
            for connection in targets:
                tasks.start_soon(self._send, connection, uri)
        for session_id in dead:
            await self.release_session(session_id)

    def _still_visible(self, caller: Caller, uri: str) -> bool:
        try:
            return self._visible(caller, uri)
        except TenantryError:  # the tenant is halted or gone meanwhile
            return False

    async def _send(self, connection: Any, uri: str) -> None:
        with anyio.move_on_after(self._send_timeout):  # a stuck client must not hold up the others
            try:
                await connection.send_resource_updated(uri)
            except Exception:
                logger.debug("could not tell a session of a resource update", exc_info=True)

    def _add(self, session_id: str, session: _Session, uri: str, upstream: str) -> None:
        session.uris[uri] = upstream
        self._per_tenant[session.tenant_id] = self._per_tenant.get(session.tenant_id, 0) + 1
        self._subscribers.setdefault((session.tenant_id, uri), set()).add(session_id)

    def _remove(self, session_id: str, session: _Session, uri: str) -> str:
        upstream = session.uris.pop(uri)
        count = self._per_tenant.get(session.tenant_id, 0) - 1
        if count > 0:
            self._per_tenant[session.tenant_id] = count
        else:
            self._per_tenant.pop(session.tenant_id, None)
        key = (session.tenant_id, uri)
        subscribers = self._subscribers.get(key)
        if subscribers is not None:
            subscribers.discard(session_id)
            if not subscribers:
                del self._subscribers[key]
                self._last_sent.pop(key, None)
        if not session.uris and self._sessions.get(session_id) is session:
            del self._sessions[session_id]
        return upstream

    async def _release(self, upstream: str, tenant_id: str, uri: str) -> None:
        own = original_uri(upstream, uri)
        if own is None:
            return
        try:
            await self._relay.unsubscribe_resource(upstream, tenant_id, own)
        except Exception:
            logger.warning("could not release an upstream subscription", exc_info=True)
