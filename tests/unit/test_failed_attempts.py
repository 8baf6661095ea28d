"""Failed credential attempts: past the limit, refused before verification, per key only."""

from __future__ import annotations

import pytest

from tenantry.core.errors import RateLimited
from tenantry.ratelimit.failures import FailedAttempts


def test_failures_beyond_the_limit_are_refused_with_a_retry_after() -> None:
    failures = FailedAttempts("3/minute")
    for _ in range(3):
        failures.check("addr:10.0.0.1")
        failures.failed("addr:10.0.0.1")
    with pytest.raises(RateLimited) as refused:
        failures.check("addr:10.0.0.1")
    assert 1 <= refused.value.retry_after <= 60
    assert refused.value.to_dict()["retry_after"] == refused.value.retry_after
    failures.check("addr:10.0.0.2")  # another address is not affected


def test_checks_alone_never_count() -> None:
    failures = FailedAttempts("2/minute")
    for _ in range(10):
        failures.check("addr:10.0.0.1")


def test_an_unknown_address_is_not_limited() -> None:
    failures = FailedAttempts("1/minute")
    failures.failed(None)
    failures.check(None)
