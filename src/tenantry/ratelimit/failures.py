"""Failed credential attempts, counted per key (e.g. a client address).

When a count is over its limit, further attempts are refused with ``429`` before any
verification runs, until the moving window has passed. Only failures count: a client that
authenticates correctly is never slowed down. Storage is in-process (per replica) here;
the ``limits`` storage URI makes it shared (``redis://``) when replicas must agree.
"""

from __future__ import annotations

import math
import time

from limits import parse
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from tenantry.core.errors import RateLimited

__all__ = ["FailedAttempts"]


class FailedAttempts:
    """:param limit: e.g. ``"10/minute"``; :param storage_uri: a ``limits`` storage URI."""

    def __init__(self, limit: str, *, storage_uri: str = "memory://", namespace: str = "tenantry-failures") -> None:
        self._item = parse(limit)
        self._limiter = MovingWindowRateLimiter(storage_from_string(storage_uri))
        self._namespace = namespace

    def check(self, *keys: str | None) -> None:
        """:raises RateLimited: when any key has used up its failures (with ``retry_after`` seconds)."""
        for key in keys:
            if key is None:
                continue
            if not self._limiter.test(self._item, self._namespace, key):
                reset = self._limiter.get_window_stats(self._item, self._namespace, key).reset_time
                retry_after = max(1, math.ceil(reset - time.time()))
                raise RateLimited(f"too many failed attempts; retry in {retry_after}s", retry_after=retry_after)

    def failed(self, *keys: str | None) -> None:
        for key in keys:
            if key is not None:
                self._limiter.hit(self._item, self._namespace, key)
