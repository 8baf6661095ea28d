"""Single use of identity assertions: a ``(issuer, jti)`` seen before its expiry is a replay.

:class:`SeenAssertions` keeps them in memory, per process, until each assertion expires
(assertions live minutes, so the set stays small). When it is full of unexpired entries,
further assertions are refused rather than an old entry forgotten: forgetting one would let
it be replayed. With several replicas, the shared ledger in
:mod:`tenantry.ratelimit.assertions` (Redis) makes one use per deployment.
"""

from __future__ import annotations

import heapq
import time
from typing import Protocol

__all__ = ["AssertionLedger", "SeenAssertions"]


class AssertionLedger(Protocol):
    """Where used assertions are remembered until they expire."""

    async def first_use(self, issuer: str, jti: str, expires_at: int) -> bool | None:
        """``True`` the first time, ``False`` for a replay, ``None`` when it cannot tell (refuse)."""
        ...


class SeenAssertions:
    def __init__(self, *, max_entries: int = 100_000, leeway: int = 0) -> None:
        self._max = max_entries
        self._leeway = leeway
        self._seen: set[tuple[str, str]] = set()
        self._expiry: list[tuple[int, str, str]] = []

    async def first_use(self, issuer: str, jti: str, expires_at: int) -> bool | None:
        return self.first_use_at(issuer, jti, expires_at, now=time.time())

    def first_use_at(self, issuer: str, jti: str, expires_at: int, *, now: float) -> bool | None:
        """:meth:`first_use` at the time ``now``."""
        while self._expiry and self._expiry[0][0] + self._leeway < now:
            _, old_issuer, old_jti = heapq.heappop(self._expiry)
            self._seen.discard((old_issuer, old_jti))
        key = (issuer, jti)
        if key in self._seen:
            return False
        if len(self._seen) >= self._max:
            return None
        self._seen.add(key)
        heapq.heappush(self._expiry, (expires_at, issuer, jti))
        return True
