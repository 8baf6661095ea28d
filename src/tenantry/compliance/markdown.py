"""The report as Markdown: summary first, then every control with its evidence."""

from __future__ import annotations

from typing import Any

from tenantry.compliance.report import STATUS_LABELS, worst_finding

__all__ = ["render_markdown"]

_MARK = {True: "holds", False: "CONTRADICTS", None: "not evidenced"}
_ORDER = {"gap": 0, "not_evidenced": 1, "partial": 2}


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(report: dict[str, Any]) -> str:
    summary, deployment = report["summary"], report["deployment"]
    lines = [
        "# Compliance report",
        "",
        f"Generated {report['generated_at']} for {deployment['public_url']} ({deployment['tenants']} tenants);"
        f" evidence older than {report['max_evidence_age_days']} days does not count.",
        "",
        "| met | partial | gap | not evidenced |",
        "| --- | --- | --- | --- |",
        f"| {summary['met']} | {summary['partial']} | {summary['gap']} | {summary['not_evidenced']} |",
        "",
    ]
    open_items = [c for c in report["controls"] if c["status"] != "met"]
    if open_items:
        lines += ["## Open items", ""]
        for control in sorted(open_items, key=lambda c: _ORDER[c["status"]]):
            status = STATUS_LABELS[control["status"]]
            lines.append(f"- **{control['framework']} {control['id']}** ({status}): {worst_finding(control)}")
        lines.append("")
    framework = None
    for control in report["controls"]:
        if control["framework"] != framework:
            framework = control["framework"]
            lines += [f"## {framework}", ""]
        lines += [
            f"### {control['id']} {control['title']}: {STATUS_LABELS[control['status']]}",
            "",
            "| evidence | finding | source | as of |",
            "| --- | --- | --- | --- |",
        ]
        for item in control["evidence"]:
            age = "" if item["age_days"] is None else f" ({item['age_days']} d)"
            lines.append(
                f"| {_MARK[item['holds']]} | {_cell(item['text'])} | {_cell(item['source'])}"
                f" | {item['at'] or '-'}{age} |"
            )
        lines.append("")
    trend = report["trend"]
    if trend["denials"]:
        lines += ["## Refusals per tenant, last 30 days", "", "| tenant | total | busiest day |", "| --- | --- | --- |"]
        for tenant, counts in trend["denials"].items():
            peak = max(range(len(counts)), key=lambda i: counts[i])
            lines.append(f"| {_cell(tenant)} | {sum(counts)} | {trend['days'][peak]} ({counts[peak]}) |")
        lines.append("")
    return "\n".join(lines)
