"""Every request of a tenant is counted (a token bucket of one second's worth), whatever its method."""

from __future__ import annotations

import pytest

from tenantry.core.errors import RateLimited
from tenantry.core.limits import TenantLimits
from tenantry.ratelimit.requests import RequestBudget


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def budget(clock: Clock, **limits: int) -> RequestBudget:
    per_tenant = {
        "acme": TenantLimits(requests_per_second=limits.get("acme", 3), burst=1),
        "globex": TenantLimits(),
    }
    return RequestBudget(per_tenant.__getitem__, clock=clock)


def test_a_tenant_over_its_requests_per_second_is_refused_with_retry_after() -> None:
    clock = Clock()
    requests = budget(clock)
    for _ in range(3):
        requests.admit("acme")  # the positive control: up to the limit
    with pytest.raises(RateLimited) as refused:
        requests.admit("acme")
    assert refused.value.retry_after == 1 and "3 requests within a second" in refused.value.message


def test_another_tenant_and_the_next_second_are_untouched() -> None:
    clock = Clock()
    requests = budget(clock)
    for _ in range(3):
        requests.admit("acme")
    with pytest.raises(RateLimited):
        requests.admit("acme")
    for _ in range(200):
        requests.admit("globex")  # its own budget (the default, 200)
    with pytest.raises(RateLimited):
        requests.admit("globex")
    clock.now += 1
    for _ in range(3):
        requests.admit("acme")  # a second later, a second's worth again


def test_a_flooding_tenant_is_admitted_at_an_even_pace() -> None:
    clock = Clock()
    requests = budget(clock, acme=10)
    for _ in range(10):
        requests.admit("acme")
    admitted = 0
    for _ in range(100):  # 100 tries over one second, every 10 ms
        clock.now += 0.01
        try:
            requests.admit("acme")
            admitted += 1
        except RateLimited:
            pass
    assert 9 <= admitted <= 10  # the refill, one every 100 ms, not a burst of 10


def test_the_budget_forgets_tenants_past_its_bound() -> None:
    clock = Clock()
    requests = RequestBudget(lambda tenant: TenantLimits(requests_per_second=1, burst=1), clock=clock, max_tenants=10)
    for n in range(25):
        requests.admit(f"t{n}")
    assert len(requests._buckets) <= 10


def test_the_request_limit_is_never_below_twice_the_call_burst() -> None:
    clock = Clock()
    requests = RequestBudget(lambda tenant: TenantLimits(requests_per_second=3, burst=10), clock=clock)
    for _ in range(20):
        requests.admit("acme")
    with pytest.raises(RateLimited):
        requests.admit("acme")
