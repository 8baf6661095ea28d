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


def fastest_of(times: int, probe: Callable[[], T]) -> tuple[list[T], float]:
    """Call ``probe`` ``times`` times; returns the results and the fastest call's seconds.

    A loaded machine (CI) makes one call in a while slow; a slowed-down server makes every one
    slow, so the fastest is what tells them apart.
    """
    results: list[T] = []
    fastest = float("inf")
    for _ in range(times):
        started = time.monotonic()
        results.append(probe())
        fastest = min(fastest, time.monotonic() - started)
    return results, fastest
