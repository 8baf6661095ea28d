"""Durations written the way operators write them: ``90s``, ``15m``, ``1h``, ``365d``."""

from __future__ import annotations

import re

from tenantry.core.errors import UsageError

__all__ = ["parse_duration", "format_duration"]

_DURATION = re.compile(r"(\d+)([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """Parse ``<n>s``, ``<n>m``, ``<n>h`` or ``<n>d`` into whole seconds.

    :raises UsageError: for anything else, including zero.
    """
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise UsageError(f"invalid duration {text!r}: use a whole number followed by s, m, h or d (e.g. 15m)")
    seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds <= 0:
        raise UsageError(f"invalid duration {text!r}: must be greater than zero")
    return seconds


def format_duration(seconds: int) -> str:
    if seconds % 86400 == 0:
        return f"{seconds // 86400}d"
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0:
        return f"{seconds // 60}m"
    return f"{seconds}s"
