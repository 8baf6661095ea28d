"""In-process moving-window counters whose memory is bounded however many keys callers make up.

``limits``' memory storage keeps every key it has ever seen (an expired moving window leaves
an empty list behind) and sweeps all of them every 10 ms from a thread, so counting per
client address let spoofed or IPv6 addresses grow it, and its sweep, without bound. Here a
counter holds at most ``max_keys`` keys; past that the key hit least recently is forgotten
(it starts again from zero, which only ever favours that one caller).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable

from limits import parse

__all__ = ["MovingWindow"]


class MovingWindow:
    """At most ``amount`` hits per key within any ``seconds``-long window.

    :param limit: a ``limits`` rate string such as ``"10/minute"``.
    :param max_keys: keys remembered at once (the least recently hit are forgotten first).
    """

    def __init__(self, limit: str, *, max_keys: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        item = parse(limit)
        self.amount = item.amount
        self.seconds = float(item.get_expiry())
        self._max_keys = max_keys
        self._clock = clock
        self._hits: OrderedDict[Hashable, deque[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._hits)

    def hit(self, key: Hashable) -> bool:
        """Count one hit against ``key``; ``False`` (and not counted) when the key is at its limit."""
        now = self._clock()
        hits = self._current(key, now)
        if hits is None:
            hits = self._hits[key] = deque()
            while len(self._hits) > self._max_keys:
                self._hits.popitem(last=False)
        else:
            self._hits.move_to_end(key)
        if len(hits) >= self.amount:
            return False
        hits.append(now)
        return True

    def retry_after(self, key: Hashable) -> int:
        """Whole seconds until ``key`` may hit again (0 when it may now)."""
        now = self._clock()
        hits = self._current(key, now)
        if hits is None or len(hits) < self.amount:
            return 0
        return max(1, math.ceil(hits[0] + self.seconds - now))

    def _current(self, key: Hashable, now: float) -> deque[float] | None:
        hits = self._hits.get(key)
        if hits is None:
            return None
        horizon = now - self.seconds
        while hits and hits[0] <= horizon:
            hits.popleft()
        return hits
