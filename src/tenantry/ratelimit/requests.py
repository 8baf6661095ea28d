"""Every request of a tenant on ``/mcp`` counted, not only its calls.

The call limits (:mod:`tenantry.ratelimit.tenant_limits`) count tool calls, resource reads and
prompt gets. A tenant's other requests (``tools/list``, ``resources/list``, ``server/discover``,
pings, notifications, session opening and closing) each cost the server as much CPU as a
refused call: parsed, authenticated and answered on the event loop every tenant shares. Left
uncounted, one tenant listing its tools in a loop over a few dozen connections raised another
tenant's p99 latency more than tenfold (outside attack review). Here every authenticated
request of a tenant is counted against ``requests_per_second`` (a token bucket), per
server process (it bounds this process's work, like ``concurrent_calls``), and never below
twice the tenant's call ``burst``.

Memory: one small entry per tenant that has made a request (only verified principals of known
tenants get here), bounded by ``max_tenants``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from tenantry.core.errors import RateLimited
from tenantry.core.limits import TenantLimits

__all__ = ["RequestBudget"]


class RequestBudget:
    """:param limits_for: a tenant's effective limits (``requests_per_second``, ``burst``)."""

    def __init__(
        self,
        limits_for: Callable[[str], TenantLimits],
        *,
        clock: Callable[[], float] = time.monotonic,
        max_tenants: int = 100_000,
    ) -> None:
        self._limits_for = limits_for
        self._clock = clock
        self._max_tenants = max_tenants
        self._buckets: dict[str, list[float]] = {}
        """``tenant -> [tokens left, when they were counted]``: a token bucket per tenant."""

    def admit(self, tenant_id: str) -> None:
        """Count one request of ``tenant_id``.

        A token bucket holding one second's worth of requests, refilled continuously: an idle
        tenant may send a second's worth at once, a flooding one is admitted at an even pace
        (not in one burst at the start of every second, which would queue everyone else's
        requests behind it).

        :raises RateLimited: the tenant's bucket is empty.
        """
        now = self._clock()
        limits = self._limits_for(tenant_id)
        # Never below twice the call burst: a tenant whose call limits were raised is not capped by
        # a request limit nobody raised with them (each call is a request too).
        rate = float(max(limits.requests_per_second, 2 * limits.burst))
        bucket = self._buckets.get(tenant_id)
        if bucket is None:
            if len(self._buckets) >= self._max_tenants:
                self._buckets.clear()  # only ever favours the tenants forgotten
            bucket = self._buckets[tenant_id] = [rate, now]
        tokens = min(rate, bucket[0] + (now - bucket[1]) * rate)
        bucket[1] = now
        if tokens < 1:
            bucket[0] = tokens
            raise RateLimited(
                f"more than {rate:g} requests within a second (this tenant's request limit)", retry_after=1
            )
        bucket[0] = tokens - 1
