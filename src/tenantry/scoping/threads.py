"""Bounded thread capacity for blocking work: a bulkhead per tenant, a ceiling over all tenants,
and a reserve for the system that tenants never touch.

anyio starts a new worker thread whenever none is idle; only capacity limiters bound how many
run. Here a tenant's blocking call (SQL, files, vectors, secrets, synchronous tool code) holds one
token of the tenant's own limiter (``blocking_threads`` of its limits) and one of the limiter
shared by all tenants (``tenant_threads``) for as long as its thread runs, *even after the
awaiting call was cancelled*: anyio releases its limiter as soon as a cancelled caller stops
waiting, so a tenant whose statements hang or time out could otherwise start thread after thread.
The caller itself is never held up by a cancelled call's thread: it gets its cancellation at once,
the :class:`Interrupt` it passed is set (the SQLite handle's progress handler polls it), and the
capacity comes back when the thread ends.

System work (control-plane polls, audit checkpoints, key maintenance) runs under a separate limiter
of ``system_threads``, so a halt still reaches the server while every tenant floods slow work.

Tenant limiters live in a bounded LRU: beyond ``max_idle_tenants`` the least recently used *idle*
ones are dropped (a busy limiter is never dropped, or its tokens would be forgotten), so the
registry grows with the number of tenants doing blocking work at once, not with the tenant count.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import TypeVar

import anyio
import anyio.to_thread

from tenantry.core.effects import before_effect
from tenantry.core.limits import TenantLimits

__all__ = [
    "Interrupt",
    "ThreadBulkheads",
    "DEFAULT_TENANT_THREADS",
    "DEFAULT_SYSTEM_THREADS",
    "DEFAULT_MAX_IDLE_TENANTS",
    "default_bulkheads",
]

_T = TypeVar("_T")

DEFAULT_TENANT_THREADS = 64
"""Threads all tenants' blocking work may occupy together."""
DEFAULT_SYSTEM_THREADS = 8
"""Threads reserved for the system's own blocking work."""
DEFAULT_MAX_IDLE_TENANTS = 1024


class Interrupt:
    """Set (from the event loop) when the call awaiting a blocking function is cancelled.

    The blocking function may poll :meth:`is_set` to stop early; setting a flag is atomic.
    """

    __slots__ = ("_callbacks", "_set")

    def __init__(self) -> None:
        self._set = False
        self._callbacks: list[Callable[[], None]] = []

    def set(self) -> None:
        self._set = True
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            try:
                callback()
            except Exception:  # an interrupt is best effort; the thread's own checks still apply
                logging.getLogger(__name__).debug("interrupt callback failed", exc_info=True)

    def is_set(self) -> bool:
        return self._set

    def on_set(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (cheap, non-blocking) when the interrupt is set, or now if it is."""
        if self._set:
            callback()
        else:
            self._callbacks.append(callback)


class _Abandoned(Exception):
    """The caller was cancelled before the thread picked the work up."""


class _Claim:
    """Who releases a call's tokens: the thread when it ran the work, else the cancelled caller."""

    __slots__ = ("abandoned", "lock", "started")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.started = False
        self.abandoned = False


class _LoopState:
    """Limiters belong to one event loop (tests and restarts bring new ones)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, tenant_threads: int, system_threads: int) -> None:
        self.loop = loop
        self.tenants_total = anyio.CapacityLimiter(tenant_threads)
        self.system = anyio.CapacityLimiter(system_threads)
        # Tokens are counted by the limiters above; anyio's own limiter must not count them again.
        self.unbounded = anyio.CapacityLimiter(math.inf)
        self.per_tenant: OrderedDict[str, anyio.CapacityLimiter] = OrderedDict()


class ThreadBulkheads:
    """Runs blocking work in bounded per-tenant capacity.

    :param limits_for: a tenant's effective limits (``blocking_threads`` is read on every call,
        so an override takes effect on the tenant's next call).
    :param tenant_threads: threads all tenants together may occupy.
    :param system_threads: threads reserved for :meth:`run_system`.
    :param max_idle_tenants: idle per-tenant limiters kept before the least recent are dropped.
    """

    def __init__(
        self,
        limits_for: Callable[[str], TenantLimits] | None = None,
        *,
        tenant_threads: int = DEFAULT_TENANT_THREADS,
        system_threads: int = DEFAULT_SYSTEM_THREADS,
        max_idle_tenants: int = DEFAULT_MAX_IDLE_TENANTS,
    ) -> None:
        if tenant_threads < 1 or system_threads < 1 or max_idle_tenants < 1:
            raise ValueError("thread capacities must be positive")
        default = TenantLimits()
        self.limits_for: Callable[[str], TenantLimits] = limits_for or (lambda _tenant_id: default)
        self.tenant_threads = tenant_threads
        self.system_threads = system_threads
        self._max_idle = max_idle_tenants
        self._state: _LoopState | None = None

    async def run(self, fn: Callable[[], _T], *, tenant_id: str, interrupt: Interrupt | None = None) -> _T:
        """Run ``fn`` in a worker thread within ``tenant_id``'s capacity; waits for a free token.

        On cancellation the caller is released at once and ``interrupt`` (if given) is set; the
        tokens stay taken until ``fn`` returns. Whatever ``fn`` raises propagates.
        """
        await before_effect()  # inside a call: its start is durable before its data is touched
        state = self._current()
        tenant = self._tenant_limiter(state, tenant_id)
        borrower = _Claim()
        await _acquire(tenant, borrower)
        try:
            await _acquire(state.tenants_total, borrower)
        except BaseException:
            tenant.release_on_behalf_of(borrower)
            raise
        total, loop = state.tenants_total, state.loop

        def release() -> None:
            tenant.release_on_behalf_of(borrower)
            total.release_on_behalf_of(borrower)

        def work() -> _T:
            with borrower.lock:
                if borrower.abandoned:
                    raise _Abandoned  # never reaches anyone: the caller has left
                borrower.started = True
            try:
                return fn()
            finally:
                with contextlib.suppress(RuntimeError):  # a closed loop took its limiters with it
                    loop.call_soon_threadsafe(release)

        try:
            return await anyio.to_thread.run_sync(work, limiter=state.unbounded, abandon_on_cancel=True)
        except BaseException:
            if interrupt is not None:
                interrupt.set()
            with borrower.lock:
                never_started = not borrower.started
                borrower.abandoned = never_started
            if never_started:
                release()
            raise

    async def run_system(self, fn: Callable[[], _T]) -> _T:
        """Run the system's own blocking ``fn`` (control plane, audit) in its reserved capacity."""
        return await anyio.to_thread.run_sync(fn, limiter=self._current().system)

    def busy_threads(self, tenant_id: str | None = None) -> int:
        """Threads held by ``tenant_id`` (all tenants for ``None``) on the current loop."""
        state = self._state
        if state is None:
            return 0
        if tenant_id is None:
            return state.tenants_total.borrowed_tokens
        limiter = state.per_tenant.get(tenant_id)
        return 0 if limiter is None else limiter.borrowed_tokens

    def tracked_tenants(self) -> int:
        """How many per-tenant limiters the registry holds (bounded; see the module docstring)."""
        return 0 if self._state is None else len(self._state.per_tenant)

    def _current(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        state = self._state
        if state is None or state.loop is not loop:
            state = self._state = _LoopState(loop, self.tenant_threads, self.system_threads)
        return state

    def _tenant_limiter(self, state: _LoopState, tenant_id: str) -> anyio.CapacityLimiter:
        threads = self.limits_for(tenant_id).blocking_threads
        limiters = state.per_tenant
        limiter = limiters.get(tenant_id)
        if limiter is None:
            limiter = limiters[tenant_id] = anyio.CapacityLimiter(threads)
            if len(limiters) > self._max_idle:
                self._drop_idle(limiters)
        else:
            limiters.move_to_end(tenant_id)
            if limiter.total_tokens != threads:
                limiter.total_tokens = threads
        return limiter

    def _drop_idle(self, limiters: OrderedDict[str, anyio.CapacityLimiter]) -> None:
        excess = len(limiters) - self._max_idle
        for tenant_id, limiter in list(limiters.items())[:-1]:  # never the one just added
            if excess <= 0:
                break
            stats = limiter.statistics()
            if stats.borrowed_tokens == 0 and stats.tasks_waiting == 0:
                del limiters[tenant_id]
                excess -= 1


async def _acquire(limiter: anyio.CapacityLimiter, borrower: object) -> None:
    # The uncontended path takes no trip through the event loop.
    try:
        limiter.acquire_on_behalf_of_nowait(borrower)
    except anyio.WouldBlock:
        await limiter.acquire_on_behalf_of(borrower)


_DEFAULT = ThreadBulkheads()


def default_bulkheads() -> ThreadBulkheads:
    """The bulkheads of handles built without explicit ones (default limits for every tenant)."""
    return _DEFAULT
