"""Per-call deadlines cheap enough to sit on every tool call.

A timer per call (``anyio.move_on_after``, ``asyncio.timeout``) costs a heap insertion and
removal in the event loop on every call. Instead, calls register their deadline in a table
and one sweep, scheduled only while calls are in flight, cancels the overdue ones every
``granularity`` seconds. A deadline may therefore fire up to one granularity late. The
cancellation is balanced with ``Task.uncancel``, so enclosing anyio cancel scopes never
see it, and a cancellation that did not come from the sweep always propagates.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

__all__ = ["DeadlineWatch", "DeadlineExceeded", "Interrupted"]

_T = TypeVar("_T")


class DeadlineExceeded(Exception):
    """The awaited work did not finish before its deadline and was cancelled."""


class Interrupted(Exception):
    """The awaited work was cancelled through :meth:`DeadlineWatch.interrupt` (e.g. a tenant halt)."""


class _Entry:
    __slots__ = ("deadline", "expired", "interrupted", "tag", "task")

    def __init__(self, task: asyncio.Task[object], deadline: float, tag: str | None) -> None:
        self.task = task
        self.deadline = deadline
        self.tag = tag
        self.expired = False
        self.interrupted = False


class DeadlineWatch:
    """Deadlines for the awaits of one event loop (the server's)."""

    def __init__(self, granularity: float = 0.1) -> None:
        self._granularity = granularity
        self._active: dict[int, _Entry] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sweep_scheduled = False
        self._next_key = 0

    async def run(self, work: Awaitable[_T], seconds: float, *, tag: str | None = None) -> _T:
        """Await ``work``, cancelling it once ``seconds`` have passed (at most one granularity late).

        :param tag: lets :meth:`interrupt` cancel every awaited work with this tag.
        :raises DeadlineExceeded: when the deadline passed.
        :raises Interrupted: when :meth:`interrupt` cancelled it; any other cancellation propagates.
        """
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - always inside a task under the server
            return await work
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new loop (tests, restarts): earlier sweeps died with the old one
            self._loop, self._sweep_scheduled = loop, False
            self._active.clear()
        entry = _Entry(task, loop.time() + seconds, tag)
        key = self._next_key
        self._next_key += 1
        self._active[key] = entry
        if not self._sweep_scheduled:
            self._sweep_scheduled = True
            loop.call_later(self._granularity, self._sweep, loop)
        try:
            return await work
        except asyncio.CancelledError:
            if (entry.expired or entry.interrupted) and task.uncancel() == 0:
                if entry.interrupted:
                    raise Interrupted() from None
                raise DeadlineExceeded() from None
            raise
        finally:
            self._active.pop(key, None)

    def interrupt(self, tag: str) -> int:
        """Cancel every awaited work carrying ``tag`` (call from the loop's thread); returns how many."""
        count = 0
        for entry in list(self._active.values()):
            if entry.tag == tag and not (entry.expired or entry.interrupted):
                entry.interrupted = True
                entry.task.cancel()
                count += 1
        return count

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        if loop is not self._loop:
            return
        now = loop.time()
        for entry in list(self._active.values()):
            if not (entry.expired or entry.interrupted) and entry.deadline <= now:
                entry.expired = True
                entry.task.cancel()
        if self._active:
            loop.call_later(self._granularity, self._sweep, loop)
        else:
            self._sweep_scheduled = False
