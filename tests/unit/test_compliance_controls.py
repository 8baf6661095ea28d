"""How findings make a control's status, and the denial chart."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tenantry.compliance.controls import Finding, freshen, status_of
from tenantry.compliance.html import denial_chart

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def holds(at: datetime | None = NOW) -> Finding:
    return Finding(True, "ok", "test", at)


@pytest.mark.parametrize(
    ("oks", "status"),
    [
        ((True, True), "met"),
        ((True, None), "partial"),
        ((None, None), "not_evidenced"),
        ((True, False), "gap"),
        ((None, False), "gap"),
        ((), "not_evidenced"),
    ],
)
def test_status_from_findings(oks: tuple[bool | None, ...], status: str) -> None:
    assert status_of(tuple(Finding(ok, "x", "test", NOW) for ok in oks)) == status


def test_stale_evidence_no_longer_holds() -> None:
    old = freshen(holds(NOW - timedelta(days=31)), NOW, timedelta(days=30))
    assert old.ok is None and old.stale and "STALE: 31 days old" in old.text
    assert freshen(holds(NOW - timedelta(days=29)), NOW, timedelta(days=30)).ok is True
    assert status_of((holds(), old)) == "partial"


def test_a_contradiction_stays_a_contradiction_however_old() -> None:
    old = Finding(False, "failed", "test", NOW - timedelta(days=400))
    assert freshen(old, NOW, timedelta(days=30)).ok is False


def test_chart_sums_the_quietest_tenants_as_others() -> None:
    days = [f"2026-11-{d:02d}" for d in range(1, 31)]
    series = {f"t{n}": [n] * 30 for n in range(12)}
    svg = denial_chart(days, series)
    assert svg.count("<polyline") == 8
    assert "5 others" in svg and "t11 (330)" in svg and "t0 (" not in svg
    assert svg.startswith("<svg") and "http" not in svg.replace('xmlns="http://www.w3.org/2000/svg"', "")


def test_chart_escapes_tenant_names() -> None:
    svg = denial_chart(["2026-11-30", "2026-12-01"], {"<b>x</b>": [0, 3]})
    assert "<b>" not in svg and "&lt;b&gt;x&lt;/b&gt;" in svg
