"""Waiting for a running server to obey a change, and measuring how long it took."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def first_change(
    probe: Callable[[], T], changed: Callable[[T], bool], *, within: float, pause: float = 0.02
) -> tuple[T, float]:
    """Call ``probe`` until ``changed(result)``; returns that result and the seconds it took.

    :raises AssertionError: when nothing changed within ``within`` seconds.
    """
    started = time.monotonic()
    while True:
        result = probe()
        elapsed = time.monotonic() - started
        if changed(result):
            return result, elapsed
        if elapsed > within:
            raise AssertionError(f"no change within {within}s; last result: {result!r}")
        time.sleep(pause)
