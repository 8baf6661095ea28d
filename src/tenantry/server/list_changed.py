"""Telling live handshake-era sessions that what they may see changed.

A tenant's view (token ∩ grants ∩ registered) changes while the server runs: a grant is
added or taken away, a tool is registered or removed. Sessions of the handshake era get
``notifications/tools/list_changed`` (and the resource and prompt equivalents), sent on the
session's own server-to-client channel, so only that tenant's sessions hear of its change and
no session learns anything about another tenant's. The sessionless 2026-07-28 era has no
push channel without ``subscriptions/listen`` (not served): its clients re-list, and list
results carry ``ttlMs: 0`` so nothing stale is cached.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Collection
from typing import Any, Protocol

import anyio

__all__ = ["ListChangedNotifier", "NotifiableSession"]

logger = logging.getLogger(__name__)

_MAX_SESSIONS = 100_000


class NotifiableSession(Protocol):
    async def send_tool_list_changed(self) -> None: ...

    async def send_resource_list_changed(self) -> None: ...

    async def send_prompt_list_changed(self) -> None: ...


class ListChangedNotifier:
    """Remembers each open session's SDK session object (weakly) and its tenant."""

    def __init__(self, *, resources: bool = False, prompts: bool = False) -> None:
        self._sessions: dict[str, tuple[str, weakref.ref[Any]]] = {}
        self._resources = resources
        self._prompts = prompts

    def remember(self, session_id: str, tenant_id: str, session: NotifiableSession) -> None:
        known = self._sessions.get(session_id)
        if known is not None and known[1]() is session:
            return
        if len(self._sessions) >= _MAX_SESSIONS:
            self._prune()
        self._sessions[session_id] = (tenant_id, weakref.ref(session))

    def connection_of(self, session_id: str) -> Any | None:
        """The SDK connection object last seen for ``session_id``, if it is still alive."""
        known = self._sessions.get(session_id)
        return known[1]() if known is not None else None

    def forget(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    def _prune(self) -> None:
        for session_id in [sid for sid, (_, ref) in self._sessions.items() if ref() is None]:
            del self._sessions[session_id]

    async def notify(self, tenants: Collection[str] | None) -> int:
        """Notify the sessions of ``tenants`` (``None``: every tenant); returns how many were told."""
        targets: list[Any] = []
        for session_id, (tenant_id, ref) in list(self._sessions.items()):
            session = ref()
            if session is None:
                self._sessions.pop(session_id, None)
            elif tenants is None or tenant_id in tenants:
                targets.append(session)
        for session in targets:
            with anyio.move_on_after(1.0):  # a stuck client must not hold up the others
                try:
                    await session.send_tool_list_changed()
                    if self._resources:
                        await session.send_resource_list_changed()
                    if self._prompts:
                        await session.send_prompt_list_changed()
                except Exception:
                    logger.debug("could not notify a session of a list change", exc_info=True)
        return len(targets)
