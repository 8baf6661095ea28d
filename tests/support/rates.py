"""How many calls a tenant's rate limit may admit in a given time, for tests that flood it."""

from __future__ import annotations

import math

SUSTAINED_WINDOW = 10.0  # seconds; the sliding window of ratelimit/tenant_limits.py


def most_admitted(calls_per_second: float, elapsed: float) -> int:
    """The most calls ``limits``' sliding-window counter admits within ``elapsed`` seconds from idle.

    The counter weighs the previous fixed window by the share of it still inside the sliding one
    and compares the *floor* of that sum with the limit, so it admits the window's amount, what
    the rate earns back meanwhile (rounded up), and one more at each window boundary crossed.
    """
    per_window = max(1, math.ceil(calls_per_second * SUSTAINED_WINDOW))
    boundaries = 1 + math.floor(elapsed / SUSTAINED_WINDOW)
    return per_window + math.ceil(calls_per_second * elapsed) + boundaries
