"""The report as data: what JSON carries and the Markdown and HTML renderings show."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from tenantry.compliance.controls import DEFAULT_MAX_AGE, STATUSES, Control, evaluate
from tenantry.compliance.facts import TREND_DAYS, Facts

__all__ = ["build_report", "REPORT_FORMAT", "STATUS_LABELS", "iso", "worst_finding"]

REPORT_FORMAT = "tenantry-compliance/1"
STATUS_LABELS = {"met": "met", "partial": "partial", "gap": "gap", "not_evidenced": "not evidenced"}


def iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def worst_finding(control: dict[str, Any]) -> str:
    """What keeps a control from being met: a contradiction before a missing piece."""
    evidence = control["evidence"]
    worst = next((e for e in evidence if e["holds"] is False), None) or next(
        (e for e in evidence if e["holds"] is not True), evidence[0]
    )
    return str(worst["text"])


def _control(control: Control, now: datetime) -> dict[str, Any]:
    return {
        "framework": control.framework,
        "id": control.id,
        "title": control.title,
        "status": control.status,
        "evidence": [
            {
                "holds": f.ok,
                "text": f.text,
                "source": f.source,
                "at": iso(f.at),
                "age_days": None if f.at is None else max(0, (now - f.at).days),
                "stale": f.stale,
            }
            for f in control.findings
        ],
    }


def _trend(facts: Facts) -> dict[str, Any]:
    today = facts.generated_at.date()
    days = [(today - timedelta(days=n)).isoformat() for n in range(TREND_DAYS - 1, -1, -1)]
    return {
        "days": days,
        "denials": {tenant: [counts.get(day, 0) for day in days] for tenant, counts in facts.audit.denials.items()},
    }


def build_report(facts: Facts, *, max_age: timedelta = DEFAULT_MAX_AGE) -> dict[str, Any]:
    now = facts.generated_at
    controls = evaluate(facts, max_age=max_age)
    counts = Counter(c.status for c in controls)
    probe = facts.latest_probe
    return {
        "format": REPORT_FORMAT,
        "generated_at": iso(now),
        "max_evidence_age_days": max_age.days,
        "deployment": {
            "public_url": facts.public_url,
            "data_dir": str(facts.settings.data_dir.resolve()),
            "tenants": facts.tenants,
            "halted_now": facts.halted_now,
        },
        "summary": {status: counts.get(status, 0) for status in STATUSES},
        "controls": [_control(c, now) for c in controls],
        "trend": _trend(facts),
        "evidence": {
            "audit_verify": {
                "at": iso(facts.audit.verified_at),
                "intact": facts.audit.intact,
                "streams": len(facts.audit.reports),
                "records": facts.audit.records,
                "failures": [r.line() for r in facts.audit.failures],
            },
            "probe": None
            if probe is None
            else {
                "file": probe.path.name,
                "at": iso(probe.at),
                "url": probe.body.get("url"),
                "result": probe.body.get("result"),
                "intact": probe.intact,
                "summary": probe.body.get("summary"),
            },
            "probe_runs": len(facts.probes),
            "keys": [
                {"purpose": k.purpose, "kid": k.kid, "alg": k.alg, "status": k.status, "created": iso(k.created)}
                for k in facts.keys
            ],
            "lifecycle": [
                {"kind": e.kind, "tenant": e.tenant, "at": iso(e.at), "by": e.by, "stores": list(e.stores)}
                for e in facts.lifecycle
            ],
            "halts": [
                {"tenant": h.tenant, "at": iso(h.at), "actor": h.actor, "reason": h.reason} for h in facts.audit.halts
            ],
        },
    }
