"""Per-tenant limits: defaults from settings, validated overrides, durations."""

from __future__ import annotations

import pytest

from tenantry.admin.actions import parse_limit_assignments
from tenantry.core.errors import UsageError
from tenantry.core.limits import TenantLimits, parse_limit_overrides
from tenantry.core.settings import load_settings


def test_defaults_come_from_the_settings() -> None:
    settings = load_settings(limits={"calls_per_second": 7, "burst": 9}, tools={"timeout": "5s"})
    limits = settings.tenant_limits()
    assert (limits.calls_per_second, limits.burst, limits.tool_timeout) == (7.0, 9, 5.0)


def test_overrides_replace_only_what_they_name() -> None:
    base = TenantLimits()
    narrowed = base.with_overrides(parse_limit_overrides({"concurrent_calls": "2", "tool_timeout": 1.5}))
    assert (narrowed.concurrent_calls, narrowed.tool_timeout, narrowed.burst) == (2, 1.5, base.burst)


@pytest.mark.parametrize(
    "overrides",
    [{"nonsense": 1}, {"burst": 0}, {"burst": -3}, {"burst": "1.5"}, {"calls_per_second": "inf"},
     {"calls_per_second": "nan"}, {"sessions": True}, {"file_bytes": None}, {"calls_per_second": "1e308"},
     {"burst": "99999999999999999999"}, {"tool_timeout": 10**9}],
)  # fmt: skip
def test_bad_overrides_are_refused(overrides: dict) -> None:
    with pytest.raises(ValueError):
        parse_limit_overrides(overrides)


def test_assignments_accept_durations_and_name_the_problem() -> None:
    assert parse_limit_assignments(["tool_timeout=2m", "burst=40"]) == {"tool_timeout": 120.0, "burst": 40}
    for bad in (["burst"], ["=3"], ["burst=x"], ["tool_timeout=5y"], ["speed=3"]):
        with pytest.raises(UsageError):
            parse_limit_assignments(bad)
