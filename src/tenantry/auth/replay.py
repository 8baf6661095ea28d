"""Single use of identity assertions: a ``(issuer, jti)`` seen before its expiry is a replay.

Kept in memory, per process, until each assertion expires (assertions live minutes, so the set
stays small). When it is full of unexpired entries, further assertions are refused rather than
an old entry forgotten: forgetting one would let it be replayed.
"""

from __future__ import annotations

import heapq
import time

__all__ = ["SeenAssertions"]


class SeenAssertions:
    def __init__(self, *, max_entries: int = 100_000, leeway: int = 0) -> None:
        self._max = max_entries
        self._leeway = leeway
        self._seen: set[tuple[str, str]] = set()
        self._expiry: list[tuple[int, str, str]] = []

    def first_use(self, issuer: str, jti: str, expires_at: int, *, now: float | None = None) -> bool | None:
        """``True`` the first time, ``False`` for a replay, ``None`` when no room is left (refuse)."""
        current = time.time() if now is None else now
        while self._expiry and self._expiry[0][0] + self._leeway < current:
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
