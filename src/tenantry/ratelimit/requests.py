"""Every request of a tenant on ``/mcp`` counted, not only its calls.

The call limits (:mod:`tenantry.ratelimit.tenant_limits`) count tool calls, resource reads and
prompt gets. A tenant's other requests (``tools/list``, ``resources/list``, ``server/discover``,
pings, notifications, session opening and closing) each cost the server as much CPU as a
refused call: parsed, authenticated and answered on the event loop every tenant shares. Left
uncounted, one tenant listing its tools in a loop over a few dozen connections raised another
tenant's p99 latency more than tenfold (outside attack review). Here every authenticated
request of a tenant is counted in one-second windows against ``requests_per_second``, per
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
    """:param limits_for: a tenant's effective limits (``requests_per_second``)."""

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
        self._windows: dict[str, list[int]] = {}
        """``tenant -> [second, requests counted in it]``."""

    def admit(self, tenant_id: str) -> None:
        """Count one request of ``tenant_id``.

        :raises RateLimited: the tenant has made ``requests_per_second`` requests in this second.
        """
        second = int(self._clock())
        window = self._windows.get(tenant_id)
        if window is None or window[0] != second:
            if window is None and len(self._windows) >= self._max_tenants:
                self._windows.clear()  # only ever favours the tenants forgotten
            self._windows[tenant_id] = [second, 1]
            return
        limits = self._limits_for(tenant_id)
        # Never below twice the call burst: a tenant whose call limits were raised is not capped by
        # a request limit nobody raised with them (each call is a request too).
        limit = max(limits.requests_per_second, 2 * limits.burst)
        if window[1] >= limit:
            raise RateLimited(
                f"more than {limit} requests within a second (this tenant's request limit)", retry_after=1
            )
        window[1] += 1
