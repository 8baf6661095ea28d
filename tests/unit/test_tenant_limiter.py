"""Admission by per-tenant limits (memory storage): exact counts, isolation, leases, failures."""

from __future__ import annotations

import pytest
from limits.aio.storage import MemoryStorage

from tenantry.core.errors import ConcurrencyLimited, LimitsUnavailable, QuotaExceeded, RateLimited
from tenantry.core.limits import TenantLimits
from tenantry.ratelimit.tenant_limits import TenantLimiter, open_limit_storage

pytestmark = pytest.mark.anyio

LOOSE = {"calls_per_second": 1e6, "burst": 10**6, "daily_calls": 10**9, "concurrent_calls": 10**6}


async def admitted(limiter: TenantLimiter, tenant: str, limits: TenantLimits, attempts: int) -> int:
    count = 0
    for _ in range(attempts):
        try:
            (await limiter.admit(tenant, limits)).release()
            count += 1
        except RateLimited:
            pass
    return count


@pytest.mark.parametrize("daily", [1, 7, 40, 333, 1000])
async def test_a_daily_quota_admits_exactly_its_amount_even_with_leases(daily: int) -> None:
    limiter = TenantLimiter(open_limit_storage("memory://"))
    limits = TenantLimits(**{**LOOSE, "daily_calls": daily})  # type: ignore[arg-type]
    assert await admitted(limiter, "acme", limits, daily + 50) == daily


class _SteppedClock:
    """``time.monotonic`` of a loaded server: quick runs of calls with pauses between them."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return 1_700_000_000.0 + self.now


@pytest.mark.parametrize("daily", [40, 1000])
async def test_a_daily_quota_loses_no_leased_units_when_calls_pause(
    daily: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Leases grow during quick runs of calls; a pause longer than a rate lease used to throw the
    rest of a daily lease away (those units were already counted), so a slow server admitted
    fewer calls than the tenant's quota."""
    import tenantry.ratelimit.tenant_limits as module

    clock = _SteppedClock()
    monkeypatch.setattr(module, "time", clock)
    limiter = TenantLimiter(open_limit_storage("memory://"))
    limits = TenantLimits(**{**LOOSE, "daily_calls": daily})  # type: ignore[arg-type]
    count = 0
    for attempt in range(daily + 50):
        if attempt % 7 == 6:
            clock.now += 0.2  # a pause: longer than a rate lease, far shorter than the day
        try:
            (await limiter.admit("acme", limits)).release()
            count += 1
        except QuotaExceeded:
            pass
    assert count == daily


async def test_the_burst_is_per_tenant_and_the_refusal_says_when_to_retry() -> None:
    limiter = TenantLimiter(open_limit_storage("memory://"))
    limits = TenantLimits(**{**LOOSE, "burst": 5})  # type: ignore[arg-type]
    assert await admitted(limiter, "acme", limits, 20) == 5
    with pytest.raises(RateLimited) as refused:
        await limiter.admit("acme", limits)
    assert refused.value.retry_after == 1 and "burst" in refused.value.message
    assert await admitted(limiter, "globex", limits, 5) == 5  # another tenant's budget is untouched


async def test_the_quota_refusal_is_its_own_code() -> None:
    limiter = TenantLimiter(open_limit_storage("memory://"))
    limits = TenantLimits(**{**LOOSE, "daily_calls": 2})  # type: ignore[arg-type]
    await admitted(limiter, "acme", limits, 2)
    with pytest.raises(QuotaExceeded) as refused:
        await limiter.admit("acme", limits)
    assert refused.value.code == "quota_exceeded" and 0 < (refused.value.retry_after or 0) <= 86400


async def test_calls_in_flight_are_bounded_and_released() -> None:
    limiter = TenantLimiter(open_limit_storage("memory://"))
    limits = TenantLimits(**{**LOOSE, "concurrent_calls": 2})  # type: ignore[arg-type]
    first, second = await limiter.admit("acme", limits), await limiter.admit("acme", limits)
    with pytest.raises(ConcurrencyLimited):
        await limiter.admit("acme", limits)
    (await limiter.admit("globex", limits)).release()
    first.release()
    first.release()  # releasing twice is harmless
    assert limiter.in_flight("acme") == 1
    (await limiter.admit("acme", limits)).release()
    second.release()
    assert limiter.in_flight("acme") == 0


class BrokenStorage(MemoryStorage):
    async def acquire_sliding_window_entry(self, *args: object, **kwargs: object) -> bool:
        raise ConnectionError("redis is down")


async def test_an_unreachable_storage_fails_closed_or_open_as_configured() -> None:
    limits = TenantLimits()
    with pytest.raises(LimitsUnavailable):
        await TenantLimiter(BrokenStorage(), fail_closed=True).admit("acme", limits)
    (await TenantLimiter(BrokenStorage(), fail_closed=False).admit("acme", limits)).release()


async def test_sparse_calls_take_single_units_so_leases_never_waste_a_budget() -> None:
    import anyio

    limiter = TenantLimiter(open_limit_storage("memory://"))
    limits = TenantLimits(**{**LOOSE, "daily_calls": 1000})  # type: ignore[arg-type]
    for _ in range(5):  # one call per lease lifetime: no lease may be taken beyond the unit used
        (await limiter.admit("acme", limits)).release()
        await anyio.sleep(0.06)
    assert await admitted(limiter, "acme", limits, 2000) == 995
