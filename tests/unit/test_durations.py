from __future__ import annotations

import pytest

from tenantry.core.durations import format_duration, parse_duration
from tenantry.core.errors import UsageError


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("15m", 900), ("1h", 3600), (" 2m ", 120), ("365d", 365 * 86400)]
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "15", "m", "1.5h", "-1m", "0s", "1w", "15 m"])
def test_invalid_durations_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError):
        parse_duration(text)


def test_format_duration_round_trips() -> None:
    assert [format_duration(s) for s in (45, 900, 7200)] == ["45s", "15m", "2h"]
