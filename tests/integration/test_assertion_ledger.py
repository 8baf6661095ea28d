"""Identity assertions are single-use across replicas when the limits storage is Redis."""

from __future__ import annotations

import os

import pytest

from tenantry.ratelimit.assertions import SharedSeenAssertions
from tenantry.ratelimit.tenant_limits import open_limit_storage

pytestmark = [pytest.mark.redis, pytest.mark.anyio]

REDIS = "async+redis://127.0.0.1:6379/0"


async def test_an_assertion_used_at_one_replica_is_refused_at_another(redis_available: None) -> None:
    prefix = f"tenantry-test-{os.urandom(6).hex()}"
    one = SharedSeenAssertions(open_limit_storage(REDIS, key_prefix=prefix), window=60)
    two = SharedSeenAssertions(open_limit_storage(REDIS, key_prefix=prefix), window=60)
    assert await one.first_use("https://idp", "jti-1", 0) is True
    assert await two.first_use("https://idp", "jti-1", 0) is False
    assert await one.first_use("https://idp", "jti-1", 0) is False
    # Positive controls: another jti, another issuer's same jti.
    assert await two.first_use("https://idp", "jti-2", 0) is True
    assert await two.first_use("https://other-idp", "jti-1", 0) is True


async def test_deployments_with_their_own_prefix_do_not_share_uses(redis_available: None) -> None:
    a = SharedSeenAssertions(open_limit_storage(REDIS, key_prefix=f"t-{os.urandom(6).hex()}"), window=60)
    b = SharedSeenAssertions(open_limit_storage(REDIS, key_prefix=f"t-{os.urandom(6).hex()}"), window=60)
    assert await a.first_use("https://idp", "j", 0) is True
    assert await b.first_use("https://idp", "j", 0) is True


async def test_an_unreachable_ledger_cannot_tell_so_the_assertion_is_refused() -> None:
    ledger = SharedSeenAssertions(open_limit_storage("async+redis://127.0.0.1:1/0", key_prefix="x"), window=60)
    assert await ledger.first_use("https://idp", "j", 0) is None
