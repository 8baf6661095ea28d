"""Admission by per-tenant limits: call rate with burst, daily quota, calls in flight.

Rates and quotas are counted in a ``limits`` storage: memory for one server, Redis
(``async+redis://``) when replicas must share one budget (a limit must never become limit x
replicas). Each tenant is counted under its own keys, so one tenant's flood only ever uses
up its own budget. Concurrency is counted in this process (it bounds this process's work).

The rate is a sliding-window counter over 10 s at ``calls_per_second`` plus a 1 s window of
``burst``: a tenant idle for a while may send ``burst`` calls at once, but never sustain
more than its rate. The daily quota is a fixed window aligned to UTC days.

A storage round trip per call and window would cost more than the rest of admission (and a
Redis round trip each), so a busy process takes a small *lease* of units at once (doubling
while each lease is used up within 50 ms, up to 16 or 1/20 of the window's amount) and spends
it locally. Leased units are counted when taken, so a lease can only make a limit stricter,
never looser; a sparse caller takes single units, and near the limit the lease falls back to
single units, exactly as without it. A rate lease lapses after 50 ms; a lease of daily units
stays spendable for up to a minute within the same UTC day, so that no part of a quota is lost.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from limits import RateLimitItem, RateLimitItemPerDay, RateLimitItemPerSecond
from limits.aio.storage import Storage
from limits.aio.strategies import FixedWindowRateLimiter, SlidingWindowCounterRateLimiter
from limits.storage import storage_from_string

from tenantry.core.errors import ConcurrencyLimited, LimitsUnavailable, QuotaExceeded, RateLimited
from tenantry.core.limits import TenantLimits

__all__ = ["TenantLimiter", "Slot", "open_limit_storage"]

logger = logging.getLogger(__name__)

_SUSTAINED_WINDOW = 10
_NAMESPACE = "tenantry-calls"
_LEASE_SECONDS = 0.05
_DAY_LEASE_SECONDS = 60.0
_MAX_LEASE = 16
_MAX_LEASES = 100_000


def open_limit_storage(uri: str, *, key_prefix: str = "tenantry") -> Storage:
    """A ``limits`` async storage from ``memory://`` or ``async+redis://...`` (redis-py client);
    ``key_prefix`` keeps deployments sharing one Redis apart."""
    if uri.startswith(("async+redis://", "async+rediss://")):
        storage = storage_from_string(
            uri, implementation="redispy", key_prefix=key_prefix, socket_timeout=1.0, socket_connect_timeout=1.0
        )
    else:
        storage = storage_from_string("async+" + uri if not uri.startswith("async+") else uri)
    if not isinstance(storage, Storage):
        raise TypeError(f"{uri} is not an asynchronous limits storage")
    return storage


@dataclass(slots=True)
class Slot:
    """One admitted call's place among its tenant's calls in flight; release it exactly once."""

    tenant_id: str
    _limiter: TenantLimiter | None

    def release(self) -> None:
        limiter, self._limiter = self._limiter, None
        if limiter is not None:
            limiter._release(self.tenant_id)


class TenantLimiter:
    """:param fail_closed: refuse calls while the storage is unreachable (else let them through)."""

    def __init__(self, storage: Storage, *, fail_closed: bool = True, clock: Callable[[], float] = time.time) -> None:
        self._storage = storage
        self._sliding = SlidingWindowCounterRateLimiter(storage)
        self._fixed = FixedWindowRateLimiter(storage)
        self._fail_closed = fail_closed
        self._clock = clock
        self._in_flight: dict[str, int] = {}
        self._leases: dict[tuple[str, str], list[float]] = {}
        """``(tenant, window) -> [units left, expires at, size, taken at]`` taken from the storage in advance."""
        self._items: dict[tuple[float, int, int], tuple[RateLimitItem, RateLimitItem, RateLimitItem]] = {}
        self._unavailable = False

    def in_flight(self, tenant_id: str) -> int:
        return self._in_flight.get(tenant_id, 0)

    def _items_for(self, limits: TenantLimits) -> tuple[RateLimitItem, RateLimitItem, RateLimitItem]:
        key = (limits.calls_per_second, limits.burst, limits.daily_calls)
        items = self._items.get(key)
        if items is None:
            sustained = max(1, math.ceil(limits.calls_per_second * _SUSTAINED_WINDOW))
            items = (
                RateLimitItemPerSecond(limits.burst, 1, namespace=_NAMESPACE),
                RateLimitItemPerSecond(sustained, _SUSTAINED_WINDOW, namespace=_NAMESPACE),
                RateLimitItemPerDay(limits.daily_calls, 1, namespace=_NAMESPACE),
            )
            if len(self._items) > 1000:
                self._items.clear()
            self._items[key] = items
        return items

    async def admit(self, tenant_id: str, limits: TenantLimits) -> Slot:
        """Take one call of ``tenant_id`` against its limits, or refuse it.

        :raises ConcurrencyLimited: too many of the tenant's calls in flight (nothing counted).
        :raises RateLimited: over the burst or the sustained rate, with ``retry_after``.
        :raises QuotaExceeded: the daily quota is used up, with ``retry_after`` to UTC midnight.
        :raises LimitsUnavailable: the storage is unreachable and the limiter fails closed.
        """
        if self._in_flight.get(tenant_id, 0) >= limits.concurrent_calls:
            raise ConcurrencyLimited(
                f"this tenant already has {limits.concurrent_calls} calls in flight (its limit); retry shortly",
                retry_after=1,
            )
        burst, sustained, daily = self._items_for(limits)
        try:
            if not await self._take(self._sliding, burst, tenant_id, "burst"):
                raise RateLimited(
                    f"more than {limits.burst} calls within a second (this tenant's burst limit)", retry_after=1
                )
            if not await self._take(self._sliding, sustained, tenant_id, "rate"):
                raise RateLimited(
                    f"over this tenant's rate of {limits.calls_per_second:g} calls per second",
                    retry_after=await self._retry_after(self._sliding, sustained, tenant_id, "rate"),
                )
            if not await self._take(self._fixed, daily, tenant_id, "day"):
                raise QuotaExceeded(
                    f"this tenant's quota of {limits.daily_calls} calls per day is used up",
                    retry_after=await self._retry_after(self._fixed, daily, tenant_id, "day"),
                )
        except RateLimited:
            raise
        except Exception as exc:  # the storage's driver errors (connection refused, timeout)
            self._storage_failed(exc)
        else:
            if self._unavailable:
                self._unavailable = False
                logger.warning("rate-limit storage available again")
        self._in_flight[tenant_id] = self._in_flight.get(tenant_id, 0) + 1
        return Slot(tenant_id, self)

    async def _take(self, limiter: Any, item: RateLimitItem, tenant_id: str, window: str) -> bool:
        """One unit of ``item`` for the tenant: from the local lease, else from the storage."""
        key = (tenant_id, window)
        now = time.monotonic()
        lease = self._leases.get(key)
        if lease is not None and lease[0] >= 1 and now < lease[1]:
            lease[0] -= 1
            return True
        # Leases grow only for a tenant that used up its last one in time: a sparse caller takes
        # single units (exact), a busy one amortises the storage round trips.
        used_up = lease is not None and lease[0] < 1 and now < lease[3] + _LEASE_SECONDS
        previous = int(lease[2]) if lease is not None else 1
        size = min(previous * 2 if used_up else 1, _MAX_LEASE, max(1, item.amount // 20))
        # Test first: a refused hit of a fixed window still counts, and would waste the units.
        if (
            size > 1
            and await limiter.test(item, tenant_id, window, cost=size)
            and await limiter.hit(item, tenant_id, window, cost=size)
        ):
            if len(self._leases) >= _MAX_LEASES:
                self._leases.clear()
            self._leases[key] = [size - 1, now + self._lease_life(window), size, now]
            return True
        if await limiter.hit(item, tenant_id, window):
            self._leases[key] = [0, now + _LEASE_SECONDS, 1, now]
            return True
        self._leases.pop(key, None)
        return False

    def _lease_life(self, window: str) -> float:
        """How long leased units may be spent. A rate lease is short (an expired one only makes the
        limit stricter); units leased from the daily quota were counted for good, so they stay
        spendable until the UTC day ends, or a loaded server would lose part of a tenant's quota."""
        if window != "day":
            return _LEASE_SECONDS
        return max(_LEASE_SECONDS, min(_DAY_LEASE_SECONDS, 86400 - self._clock() % 86400 - 1))

    def _storage_failed(self, exc: BaseException) -> None:
        if not self._unavailable:
            self._unavailable = True
            logger.error(
                "rate-limit storage unavailable (%s); calls are %s until it is back",
                type(exc).__name__,
                "refused" if self._fail_closed else "let through unlimited",
            )
        if self._fail_closed:
            raise LimitsUnavailable() from None

    async def _retry_after(self, limiter: Any, item: RateLimitItem, *keys: str) -> int:
        try:
            stats = await limiter.get_window_stats(item, *keys)
        except Exception:
            return 1
        return max(1, math.ceil(float(stats.reset_time) - self._clock()))

    def _release(self, tenant_id: str) -> None:
        count = self._in_flight.get(tenant_id, 0) - 1
        if count > 0:
            self._in_flight[tenant_id] = count
        else:
            self._in_flight.pop(tenant_id, None)

    async def reset(self) -> None:
        """Forget every count (tests)."""
        await self._storage.reset()
