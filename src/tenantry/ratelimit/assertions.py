"""One use per deployment of each identity assertion, in the shared limits storage (Redis).

Each ``(issuer, jti)`` is a fixed window of one hit that lasts at least as long as any
accepted assertion can (its maximum lifetime plus the clock leeway): every replica sees the
first use, so a replay to another replica is refused too. A storage failure answers "cannot
tell", which the token endpoint refuses (fail closed).
"""

from __future__ import annotations

import hashlib
import logging

from limits import RateLimitItemPerSecond
from limits.aio.storage import Storage
from limits.aio.strategies import FixedWindowRateLimiter

__all__ = ["SharedSeenAssertions"]

logger = logging.getLogger(__name__)


class SharedSeenAssertions:
    """An :class:`~tenantry.auth.replay.AssertionLedger` over a ``limits`` storage.

    :param window: seconds each use is remembered (at least the longest assertion lifetime plus leeway).
    """

    def __init__(self, storage: Storage, *, window: int) -> None:
        self._limiter = FixedWindowRateLimiter(storage)
        self._item = RateLimitItemPerSecond(1, max(window, 1))

    async def first_use(self, issuer: str, jti: str, expires_at: int) -> bool | None:
        key = hashlib.sha256(f"{issuer}\0{jti}".encode()).hexdigest()[:32]
        try:
            return bool(await self._limiter.hit(self._item, "tenantry-id-jag", key))
        except Exception as exc:  # the storage's driver errors (connection refused, timeout): cannot tell
            logger.warning("assertion ledger unavailable (%s); identity assertions are refused", type(exc).__name__)
            return None
