"""Whether the event loop is busy: the share of wall time its thread spends computing, measured
only while someone asks.

Every ``interval`` a tick compares the loop thread's CPU time (``time.thread_time``) with the
wall time since the last tick: near 0 while the requests in progress wait on sockets,
threads or upstreams, near 1 while they compute back to back. The smoothed share tells the
two apart. (How long a probe waits behind the ready queue would not: a loop 75% busy in
3 ms steps often has nothing queued at the moment of a probe.) Ticks run only while
:meth:`LoopLoad.busy` has been asked within the last few intervals, or work waits for an idle
loop, so an idle server is not woken.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

__all__ = ["LoopLoad"]

_UNASKED_TICKS = 5
"""Ticks without a question after which the ticking stops."""


class LoopLoad:
    """:param busy_above: smoothed share of wall time computing past which the loop is busy.
    :param interval: seconds between ticks while measuring.
    :param on_idle: called when a tick finds the loop not busy (to let waiting work in).
    :param wanted: while it returns true, ticking goes on unasked (work waits for an idle loop).
    """

    def __init__(
        self,
        *,
        busy_above: float = 0.5,
        interval: float = 0.01,
        on_idle: Callable[[], None] | None = None,
        wanted: Callable[[], bool] | None = None,
    ) -> None:
        self._busy_above = busy_above
        self._interval = interval
        self._on_idle = on_idle
        self._wanted = wanted
        self._share = 1.0
        self._ticking: asyncio.TimerHandle | None = None
        self._wall = 0.0
        self._cpu = 0.0
        self._unasked = 0

    @property
    def share(self) -> float:
        """The smoothed share of wall time the loop's thread spent computing lately (0 to 1)."""
        return self._share

    def busy(self) -> bool:
        self._unasked = 0
        if self._ticking is None:
            self._share = 1.0  # not measured lately: assume the worst until the next tick
            self._wall, self._cpu = time.perf_counter(), time.thread_time()
            self._ticking = asyncio.get_running_loop().call_later(self._interval, self._tick)
        return self._share > self._busy_above

    def _tick(self) -> None:
        wall, cpu = time.perf_counter(), time.thread_time()
        elapsed = wall - self._wall
        if elapsed > 0:
            self._share = 0.5 * self._share + 0.5 * min(1.0, (cpu - self._cpu) / elapsed)
        self._wall, self._cpu = wall, cpu
        self._unasked += 1
        if self._unasked > _UNASKED_TICKS and not (self._wanted is not None and self._wanted()):
            self._ticking = None
            return
        self._ticking = asyncio.get_running_loop().call_later(self._interval, self._tick)
        if self._share <= self._busy_above and self._on_idle is not None:
            self._on_idle()

    def stop(self) -> None:
        if self._ticking is not None:
            self._ticking.cancel()
            self._ticking = None
