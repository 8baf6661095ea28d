"""The report as one self-contained HTML page (inline CSS and SVG, no external assets)."""

from __future__ import annotations

from html import escape
from typing import Any

from tenantry.compliance.report import STATUS_LABELS, worst_finding

__all__ = ["render_html", "denial_chart"]

_COLOURS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777"]
_MAX_SERIES = len(_COLOURS)
_MARK = {True: ("✔", "holds"), False: ("✘", "contradicts"), None: ("?", "not evidenced")}

_CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1f2937;margin:0;background:#f3f4f6}
main{max-width:1100px;margin:0 auto;padding:24px 28px 48px;background:#fff;min-height:100vh}
h1{font-size:26px;margin:0 0 4px}
h2{font-size:20px;margin:32px 0 10px;border-bottom:2px solid #e5e7eb;padding-bottom:4px}
.meta{color:#4b5563;margin:0 0 18px}
.tiles{display:flex;gap:12px;margin:12px 0 18px}
.tile{flex:1;border-radius:8px;padding:12px 16px;color:#fff}
.tile b{display:block;font-size:30px;line-height:1.1}
.tile.none{opacity:.35}
.met{background:#15803d}.partial{background:#b45309}.gap{background:#b91c1c}.not_evidenced{background:#6b7280}
.badge{display:inline-block;border-radius:999px;padding:1px 10px;color:#fff;font-size:13px;white-space:nowrap}
ul.open{padding-left:20px}ul.open li{margin:3px 0}
table{border-collapse:collapse;width:100%;margin:6px 0 12px}
th,td{text-align:left;vertical-align:top;padding:7px 8px;border-bottom:1px solid #e5e7eb}
th{background:#f9fafb;font-size:13px;color:#374151}
td.id{white-space:nowrap;font-weight:600;width:80px}td.st{width:110px}
ul.ev{list-style:none;margin:0;padding:0}ul.ev li{margin:0 0 4px}
.src{color:#6b7280;font-size:12.5px}
.m-holds{color:#15803d;font-weight:700}.m-contradicts{color:#b91c1c;font-weight:700}
.m-not{color:#b45309;font-weight:700}
figure{margin:8px 0}figcaption{color:#4b5563;font-size:13px}
.legend span{display:inline-block;margin-right:14px;font-size:13px}
.legend i{display:inline-block;width:12px;height:12px;border-radius:2px;margin-right:5px;vertical-align:-1px}
footer{margin-top:32px;color:#6b7280;font-size:12.5px}
"""


def _badge(status: str) -> str:
    return f'<span class="badge {status}">{escape(STATUS_LABELS[status])}</span>'


def denial_chart(days: list[str], series: dict[str, list[int]], *, width: int = 1040, height: int = 260) -> str:
    """An inline SVG line chart of refusals per tenant per day (the busiest tenants; the
    rest summed as "others")."""
    ranked = sorted(series.items(), key=lambda item: -sum(item[1]))
    shown = ranked[: _MAX_SERIES - 1] if len(ranked) > _MAX_SERIES else ranked
    if len(ranked) > len(shown):
        rest = [sum(values) for values in zip(*(v for _, v in ranked[len(shown) :]), strict=True)]
        shown = [*shown, (f"{len(ranked) - len(shown)} others", rest)]
    left, right, top, bottom = 48, 12, 12, 34
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max([max(v) for _, v in shown] + [1])
    step = max(1, -(-peak // 4))
    y_max = step * 4
    n = max(len(days) - 1, 1)

    def x(i: int) -> float:
        return left + plot_w * i / n

    def y(v: float) -> float:
        return top + plot_h * (1 - v / y_max)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="100%" role="img"'
        ' aria-label="Refusals per tenant per day">'
    ]
    for tick in range(0, y_max + 1, step):
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" stroke="#e5e7eb"/>'
            f'<text x="{left - 6}" y="{y(tick) + 4:.1f}" font-size="11" text-anchor="end" fill="#6b7280">{tick}</text>'
        )
    for i, day in enumerate(days):
        if i % 5 == 0 or i == len(days) - 1:
            anchor = "end" if i == len(days) - 1 else "start" if i == 0 else "middle"
            parts.append(
                f'<text x="{x(i):.1f}" y="{height - 12}" font-size="11" text-anchor="{anchor}" fill="#6b7280">'
                f"{escape(day[5:])}</text>"
            )
    for (name, values), colour in zip(shown, _COLOURS, strict=False):
        points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(values))
        parts.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{points}">'
            f"<title>{escape(name)}</title></polyline>"
        )
        parts += [
            f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="2.6" fill="{colour}">'
            f"<title>{escape(name)} {escape(days[i])}: {v}</title></circle>"
            for i, v in enumerate(values)
            if v
        ]
    parts.append("</svg>")
    legend = "".join(
        f'<span><i style="background:{colour}"></i>{escape(name)} ({sum(values)})</span>'
        for (name, values), colour in zip(shown, _COLOURS, strict=False)
    )
    return "".join(parts) + f'<div class="legend">{legend}</div>'


def _evidence(items: list[dict[str, Any]]) -> str:
    rows = []
    for item in items:
        mark, word = _MARK[item["holds"]]
        css = "m-not" if item["holds"] is None else f"m-{word}"
        age = "" if item["age_days"] is None else ", today" if item["age_days"] == 0 else f", {item['age_days']} d old"
        when = f" · as of {escape(item['at'])}{age}" if item["at"] else ""
        rows.append(
            f'<li><span class="{css}" title="{word}">{mark}</span> {escape(item["text"])}'
            f' <span class="src">— {escape(item["source"])}{when}</span></li>'
        )
    return '<ul class="ev">' + "".join(rows) + "</ul>"


def render_html(report: dict[str, Any]) -> str:
    summary, deployment = report["summary"], report["deployment"]
    tiles = "".join(
        f'<div class="tile {status}{" none" if not summary[status] else ""}"><b>{summary[status]}</b>'
        f"{escape(STATUS_LABELS[status])}</div>"
        for status in ("met", "partial", "gap", "not_evidenced")
    )
    order = {"gap": 0, "not_evidenced": 1, "partial": 2}
    open_items = sorted((c for c in report["controls"] if c["status"] != "met"), key=lambda c: order[c["status"]])
    open_list = "".join(
        f"<li>{_badge(c['status'])} <b>{escape(c['framework'])} {escape(c['id'])}</b> {escape(c['title'])}: "
        f"{escape(worst_finding(c))}</li>"
        for c in open_items
    )
    trend = report["trend"]
    if trend["denials"]:
        chart = (
            f"<figure>{denial_chart(trend['days'], trend['denials'])}"
            "<figcaption>Refusals per tenant per day (denied calls, hijack attempts, refused tokens), "
            f"{escape(trend['days'][0])} to {escape(trend['days'][-1])}, from the audit streams.</figcaption></figure>"
        )
    else:
        chart = "<p>No refusal recorded in the last 30 days.</p>"
    sections = []
    for framework in dict.fromkeys(c["framework"] for c in report["controls"]):
        rows = "".join(
            f'<tr><td class="id">{escape(c["id"])}</td><td><b>{escape(c["title"])}</b>{_evidence(c["evidence"])}</td>'
            f'<td class="st">{_badge(c["status"])}</td></tr>'
            for c in report["controls"]
            if c["framework"] == framework
        )
        sections.append(
            f"<h2>{escape(framework)}</h2><table><thead><tr><th>control</th><th>evidence</th><th>status</th></tr>"
            f"</thead><tbody>{rows}</tbody></table>"
        )
    probe = report["evidence"]["probe"]
    probe_line = (
        "no probe run stored"
        if probe is None
        else f"latest probe run {escape(probe['file'])} ({escape(str(probe['result']))})"
    )
    halted = f"; halted now: {escape(', '.join(deployment['halted_now']))}" if deployment["halted_now"] else ""
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Tenantry compliance report {escape(report['generated_at'])}</title><style>{_CSS}</style></head>"
        "<body><main>"
        "<h1>Tenantry compliance report</h1>"
        f'<p class="meta">{escape(deployment["public_url"])} · {deployment["tenants"]} tenants{halted} · generated '
        f"{escape(report['generated_at'])} · evidence older than {report['max_evidence_age_days']} days"
        " does not count</p>"
        f'<section id="summary"><div class="tiles">{tiles}</div>'
        + (f'<h2>Open items</h2><ul class="open">{open_list}</ul>' if open_items else "<p>Every control is met.</p>")
        + "</section>"
        f'<section id="trend"><h2>Refusals over time</h2>{chart}</section>'
        + "".join(sections)
        + f"<footer>Audit verified {escape(report['evidence']['audit_verify']['at'])} over "
        f"{report['evidence']['audit_verify']['streams']} streams; {probe_line}; "
        f"{len(report['evidence']['lifecycle'])} exports/deletions recorded."
        f" Format {escape(report['format'])}.</footer>"
        "</main></body></html>\n"
    )
