"""Whether the event loop is busy: the share of wall time it spends outside its selector,
measured only while someone asks.

An asyncio loop waits for I/O in ``selector.select``; everything else it does is running
callbacks (or being ready to, while the host's scheduler runs another process). Every
``interval`` a tick compares the time spent in ``select`` since the last tick with the wall
time: near 0 busy while the requests in progress wait on sockets, threads or upstreams, near
1 while they compute back to back. The smoothed share tells the two apart. Neither the loop
thread's CPU time (on a loaded host a loop that always has work gets only part of a core)
nor how long a probe waits behind the ready queue (a loop 75% busy in 3 ms steps often has
nothing queued at the moment of a probe) would. A loop without a selector (not the stdlib's)
is judged by its thread's CPU time instead. Ticks run only while :meth:`LoopLoad.busy` has
been asked within the last few intervals, or work waits for an idle loop, so an idle server
is not woken.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

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
        self._spent = 0.0
        self._waited = 0.0
        """Seconds the loop has spent in ``select`` (once :meth:`_watch` wrapped it)."""
        self._watched: asyncio.AbstractEventLoop | None = None
        self._unasked = 0

    @property
    def share(self) -> float:
        """The smoothed share of wall time the loop spent outside ``select`` lately (0 to 1)."""
        return self._share

    def busy(self) -> bool:
        self._unasked = 0
        if self._ticking is None:
            loop = asyncio.get_running_loop()
            if loop is not self._watched:
                self._watch(loop)
            self._share = 1.0  # not measured lately: assume the worst until the next tick
            self._wall, self._spent = time.perf_counter(), self._busy_time()
            self._ticking = loop.call_later(self._interval, self._tick)
        return self._share > self._busy_above

    def _watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Count the time ``loop`` waits in its selector (when it has one)."""
        self._watched = loop
        selector = getattr(loop, "_selector", None)
        select = getattr(selector, "select", None)
        if select is None:
            self._waited = -1.0  # no selector to time: the thread's CPU time stands in
            return
        waited = self

        def timed_select(timeout: float | None = None) -> Any:
            started = time.perf_counter()
            try:
                return select(timeout)
            finally:
                waited._waited += time.perf_counter() - started

        selector.select = timed_select  # type: ignore[union-attr]

    def _busy_time(self) -> float:
        """Seconds the loop has not been waiting for I/O, up to now (any origin)."""
        if self._waited < 0:
            return time.thread_time()
        return time.perf_counter() - self._waited

    def _tick(self) -> None:
        wall, spent = time.perf_counter(), self._busy_time()
        elapsed = wall - self._wall
        if elapsed > 0:
            self._share = 0.5 * self._share + 0.5 * max(0.0, min(1.0, (spent - self._spent) / elapsed))
        self._wall, self._spent = wall, spent
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
