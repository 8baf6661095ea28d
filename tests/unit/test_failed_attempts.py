"""Failed credential attempts: only failures count and only failures are refused; memory is bounded."""

from __future__ import annotations

import pytest

from tenantry.core.errors import RateLimited
from tenantry.ratelimit.failures import FailedAttempts
from tenantry.ratelimit.record_budget import RecordBudget
from tenantry.ratelimit.windows import MovingWindow


def test_failures_beyond_the_limit_are_refused_with_a_retry_after() -> None:
    failures = FailedAttempts("3/minute")
    for _ in range(3):
        failures.failed("addr:10.0.0.1")
    with pytest.raises(RateLimited) as refused:
        failures.failed("addr:10.0.0.1")
    assert 1 <= refused.value.retry_after <= 60
    assert refused.value.to_dict()["retry_after"] == refused.value.retry_after
    failures.failed("addr:10.0.0.2")  # another address is not affected


def test_an_unknown_address_is_not_limited() -> None:
    failures = FailedAttempts("1/minute")
    for _ in range(5):
        failures.failed(None)


def test_the_window_moves() -> None:
    now = [1000.0]
    window = MovingWindow("2/minute", clock=lambda: now[0])
    assert window.hit("k") and window.hit("k") and not window.hit("k")
    assert window.retry_after("k") == 60
    now[0] += 30
    assert window.retry_after("k") == 30
    now[0] += 31
    assert window.hit("k") and window.retry_after("other") == 0


def test_made_up_clients_cannot_grow_the_counts_without_bound() -> None:
    failures = FailedAttempts("10/minute", max_clients=1000)
    for i in range(20_000):
        failures.failed(f"addr:10.{i // 65536}.{i // 256 % 256}.{i % 256}")
    assert len(failures) == 1000


def test_the_record_budget_remembers_a_bounded_number_of_sources() -> None:
    budget = RecordBudget(per_source="1/minute", overall="1000000/minute", max_sources=100)
    for i in range(50_000):
        budget.admit("_system", f"198.51.{i // 256 % 256}.{i % 256}")
    assert budget.sources_counted <= 10_000
    assert budget.admit("_system", "203.0.113.1") and not budget.admit("_system", "203.0.113.1")
