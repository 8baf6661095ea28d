"""Fair shares of the server's work between tenants, so one tenant's flood does not slow another.

The per-tenant limits bound how much a tenant may do; within them, every admitted request
still shares one event loop (and one interpreter) with every other tenant's. Sixteen requests
of a flooding tenant in progress make a quiet tenant's request take its turn behind all
sixteen at every step of its handling. So while the server is busy, a tenant may have only
its share of requests in progress at once; the rest wait their turn before anything expensive
is done for them (their body is read and checked, nothing more), and the tenant with the
fewest requests in progress goes first.

Work-conserving: nothing waits while fewer than ``capacity`` requests are in progress, and a
tenant alone on the server is never held back. The share is ``capacity`` divided by the
tenants active within the last second (at least one). A request holds its place for at most
``quantum`` seconds: one that takes longer (it waits on an upstream, a slow statement, its
client) no longer counts, so a slow call cannot hold up its tenant's other requests for
long, and waiting can never deadlock (a client's answer to a request of the server does not
wait at all). Waiting requests are bounded per tenant; past it a request is refused at once.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

from tenantry.core.errors import ConcurrencyLimited
from tenantry.ratelimit.loop_load import LoopLoad

__all__ = ["FairShare", "Turn"]

_ACTIVE_WINDOW = 1.0
_PRUNE_INTERVAL = 0.1


class Turn:
    """One request's place among those in progress; :meth:`end` it exactly once (idempotent)."""

    __slots__ = ("_fair", "_tenant_id", "_timer")

    def __init__(self, fair: FairShare | None, tenant_id: str) -> None:
        self._fair = fair
        self._tenant_id = tenant_id
        self._timer: asyncio.TimerHandle | None = None

    def end(self) -> None:
        fair, self._fair = self._fair, None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if fair is not None:
            fair._leave(self._tenant_id)


_NO_TURN = Turn(None, "")


class FairShare:
    """:param capacity: requests in progress at once before anyone waits.
    :param quantum: seconds a request counts as in progress at most.
    :param max_waiting: requests of one tenant waiting at once at most.
    :param max_waiting_total: requests of all tenants waiting at once at most.
    :param loop_busy: whether the event loop has work queued (default: measured by
        :class:`~tenantry.ratelimit.loop_load.LoopLoad`); while it has none, nobody waits.
    """

    def __init__(
        self,
        *,
        capacity: int = 4,
        quantum: float = 0.05,
        max_waiting: int = 64,
        max_waiting_total: int = 1024,
        loop_busy: Callable[[], bool] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._capacity = capacity
        self._quantum = quantum
        self._max_waiting = max_waiting
        self._max_waiting_total = max_waiting_total
        self._clock = clock
        self._loop_busy = (
            loop_busy
            if loop_busy is not None
            else LoopLoad(on_idle=self._admit_waiting, wanted=lambda: self._waiting_total > 0).busy
        )
        self._running: dict[str, int] = {}
        self._total = 0
        self._waiting: dict[str, deque[asyncio.Future[Turn]]] = {}
        self._seen: dict[str, float] = {}
        self._pruned = 0.0
        self._waiting_total = 0
        self.waited = 0
        """Requests that have waited for their turn (since this was made)."""

    @property
    def in_progress(self) -> int:
        return self._total

    @property
    def waiting_total(self) -> int:
        """Requests of all tenants waiting now."""
        return self._waiting_total

    def waiting(self, tenant_id: str) -> int:
        return len(self._waiting.get(tenant_id, ()))

    async def turn(self, tenant_id: str) -> Turn:
        """Wait for ``tenant_id``'s turn (at once when the server has room or the tenant is within
        its share).

        :raises ConcurrencyLimited: too many of the tenant's requests are already waiting.
        """
        now = self._clock()
        self._seen[tenant_id] = now
        queue = self._waiting.get(tenant_id)
        if not queue and self._may_start(tenant_id, now):
            return self._start(tenant_id)
        if (queue is not None and len(queue) >= self._max_waiting) or self._waiting_total >= self._max_waiting_total:
            raise ConcurrencyLimited(
                "the server is busy and too many requests are waiting for their turn; retry shortly", retry_after=1
            )
        if queue is None:
            queue = self._waiting[tenant_id] = deque()
        waiter: asyncio.Future[Turn] = asyncio.get_running_loop().create_future()
        queue.append(waiter)
        self._waiting_total += 1
        self.waited += 1
        if self._may_start(tenant_id, now):
            # Queued behind the tenant's own earlier requests, which may start now (another
            # tenant went idle since they queued): they go first.
            self._admit_waiting()
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                waiter.result().end()  # its turn came as it was cancelled: pass it on
            else:
                self._forget(tenant_id, waiter)
            raise

    def _may_start(self, tenant_id: str, now: float) -> bool:
        if self._total < self._capacity:
            return True
        active = self._active(now)
        if active <= 1:
            return True  # alone on the server: nobody to be fair to
        if not self._loop_busy():
            return True  # the requests in progress wait on I/O: holding one back would gain nothing
        return self._running.get(tenant_id, 0) < max(1, self._capacity // active)

    def _active(self, now: float) -> int:
        if now - self._pruned >= _PRUNE_INTERVAL:
            self._pruned = now
            horizon = now - _ACTIVE_WINDOW
            for tenant_id in [t for t, seen in self._seen.items() if seen < horizon]:
                if tenant_id not in self._running and tenant_id not in self._waiting:
                    del self._seen[tenant_id]
        return len(self._seen)

    def _start(self, tenant_id: str) -> Turn:
        self._running[tenant_id] = self._running.get(tenant_id, 0) + 1
        self._total += 1
        turn = Turn(self, tenant_id)
        if self._quantum > 0:
            turn._timer = asyncio.get_running_loop().call_later(self._quantum, turn.end)
        return turn

    def _leave(self, tenant_id: str) -> None:
        left = self._running[tenant_id] - 1
        if left:
            self._running[tenant_id] = left
        else:
            del self._running[tenant_id]
        self._total -= 1
        self._admit_waiting()

    def _admit_waiting(self) -> None:
        if not self._waiting:
            return  # the common case: every request's end comes here
        now = self._clock()
        while self._waiting:
            # The waiting tenant with the fewest requests in progress goes first.
            tenant_id = min(self._waiting, key=lambda t: self._running.get(t, 0))
            if not self._may_start(tenant_id, now):
                return
            queue = self._waiting[tenant_id]
            waiter = queue.popleft()
            self._waiting_total -= 1
            if not queue:
                del self._waiting[tenant_id]
            if not waiter.done():
                waiter.set_result(self._start(tenant_id))

    def _forget(self, tenant_id: str, waiter: asyncio.Future[Turn]) -> None:
        queue = self._waiting.get(tenant_id)
        if queue is None:
            return
        try:
            queue.remove(waiter)
        except ValueError:
            return
        self._waiting_total -= 1
        if not queue:
            del self._waiting[tenant_id]


def no_turn() -> Turn:
    """A turn that holds nothing (requests that never wait)."""
    return _NO_TURN
