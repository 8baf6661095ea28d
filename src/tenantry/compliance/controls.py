"""Controls of SOC 2, the GDPR and the EU AI Act, each judged from the facts that evidence it.

A control is *met* only when every finding holds and is fresh; *partial* when some hold and
the rest are missing or stale; a *gap* when any finding contradicts it; *not evidenced*
when nothing holds. Missing evidence is never read as a pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal
from urllib.parse import urlsplit

from tenantry.compliance.facts import Facts
from tenantry.core.settings import Settings

__all__ = [
    "Status",
    "Finding",
    "Control",
    "evaluate",
    "status_of",
    "freshen",
    "STATUSES",
    "DEFAULT_MAX_AGE",
    "KEY_MAX_AGE",
]

Status = Literal["met", "partial", "gap", "not_evidenced"]
STATUSES: tuple[Status, ...] = ("met", "partial", "gap", "not_evidenced")
DEFAULT_MAX_AGE = timedelta(days=30)
KEY_MAX_AGE = timedelta(days=90)
_LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


@dataclass(frozen=True)
class Finding:
    """One piece of evidence: ``ok`` True (holds), False (contradicts), None (not evidenced)."""

    ok: bool | None
    text: str
    source: str
    at: datetime | None = None
    stale: bool = False


@dataclass(frozen=True)
class Control:
    framework: str
    id: str
    title: str
    status: Status
    findings: tuple[Finding, ...]


Rule = Callable[[Facts], Finding]

# -- findings from the configuration -----------------------------------------------------------


def _settings(facts: Facts) -> Settings:
    return facts.settings


def token_policy(facts: Facts) -> Finding:
    auth = _settings(facts).auth
    ok = auth.max_token_lifetime <= 3600 and auth.default_token_ttl <= 900
    return Finding(
        ok,
        f"tokens signed {auth.signing_alg} (asymmetric, algorithm pinned);"
        f" issued for {auth.default_token_ttl // 60} min,"
        f" at most {auth.max_token_lifetime // 60} min accepted; audience pinned to {facts.public_url}/mcp"
        + ("" if ok else " - longer than the 15/60 min defaults"),
        "settings",
        facts.generated_at,
    )


def transport_security(facts: Facts) -> Finding:
    url = facts.public_url
    host = urlsplit(url).hostname or ""
    if url.startswith("https://"):
        return Finding(True, f"public URL {url} is HTTPS", "settings", facts.generated_at)
    if host in _LOOPBACK:
        return Finding(None, f"served on loopback ({url}): TLS in front of it is not evidenced", "settings")
    return Finding(False, f"public URL {url} is plain HTTP on a reachable address", "settings", facts.generated_at)


def data_isolation(facts: Facts) -> Finding:
    s = _settings(facts)
    sql = (
        "embedded SQLite behind tenant-scoped handles"
        if s.sql.url is None
        else "PostgreSQL "
        + ("row-level security (FORCE, per-transaction tenant)" if s.sql.isolation == "rls" else "schema per tenant")
    )
    files = (
        "local per-tenant roots" if s.files.backend == "local" else f"S3 per-tenant prefixes under {s.files.s3_root}/"
    )
    vectors = f"{s.vectors.backend} filtered by tenant_id"
    return Finding(True, f"SQL: {sql}; files: {files}; vectors: {vectors}", "settings", facts.generated_at)


def secrets_at_rest(facts: Facts) -> Finding:
    where = (
        "master key from the configuration"
        if facts.secrets_key == "configured"
        else "master key in a key file of the data dir (protect and back up the data dir)"
    )
    return Finding(
        True, f"secrets envelope-encrypted, one data key per tenant; {where}", "settings", facts.generated_at
    )


def limits(facts: Facts) -> Finding:
    lim, tools = _settings(facts).limits, _settings(facts).tools
    return Finding(
        True,
        f"per tenant: {lim.calls_per_second:g} calls/s (burst {lim.burst}), {lim.concurrent_calls} concurrent,"
        f" {lim.daily_calls} a day, {lim.sessions} sessions; tool timeout {tools.timeout} s;"
        f" limits store {urlsplit(lim.storage).scheme}, on failure {lim.on_storage_error}",
        "settings",
        facts.generated_at,
    )


def boundary(facts: Facts) -> Finding:
    s = _settings(facts)
    origins = ", ".join(s.server.allowed_origins) or "none (browser origins refused)"
    return Finding(
        True,
        f"Origin checked (allowed: {origins}); bodies capped at {s.server.max_body_bytes} bytes;"
        f" failed API-key attempts limited to {s.auth.failed_attempts} per address",
        "settings",
        facts.generated_at,
    )


def alerting(facts: Facts) -> Finding:
    a = _settings(facts).alerts
    raised = facts.audit.events.get("anomaly_alert", 0)
    rules = f"denial bursts ({a.denial_burst} in {a.denial_window} s), rate {a.rate_factor:g}x baseline, new addresses"
    if a.webhook_url is None:
        return Finding(None, f"anomaly alerts ({rules}) go to the log only: no webhook configured", "settings")
    return Finding(
        True, f"anomaly alerts ({rules}) to a webhook; {raised} raised so far", "settings", facts.generated_at
    )


def auto_response(facts: Facts) -> Finding:
    r = _settings(facts).response
    actions = {k: v for k, v in r.model_dump().items() if v != "none"}
    if not actions:
        return Finding(None, "no automatic response configured (alerts only; halts are manual)", "settings")
    listed = ", ".join(f"{k}: {v}" for k, v in actions.items())
    return Finding(True, f"automatic response: {listed}", "settings", facts.generated_at)


def retention(facts: Facts) -> Finding:
    days = _settings(facts).audit.retention // 86400
    kept = ""
    if facts.audit.first is not None:
        kept = f"; oldest record {facts.audit.first:%Y-%m-%d}"
    return Finding(
        days >= 365,
        f"audit retention {days} days (purging is explicit and audited){kept}",
        "settings",
        facts.generated_at,
    )


def inventory(facts: Facts) -> Finding:
    s = _settings(facts)
    stores = [
        f"control plane: {'PostgreSQL' if s.controlplane.url else 'SQLite'}",
        f"SQL: {'PostgreSQL' if s.sql.url else 'SQLite'}",
        f"vectors: {s.vectors.backend}",
        f"files: {s.files.backend}",
        "secrets: control plane, encrypted",
        f"audit: {'PostgreSQL' if s.audit.url else 'SQLite'}",
    ]
    tiers = ", ".join(f"{n} {t}" for t, n in sorted(facts.tiers.items())) or "none"
    return Finding(
        True,
        f"{facts.tenants} tenants ({tiers}); stores: " + "; ".join(stores),
        "settings + control plane",
        facts.generated_at,
    )


def by_design(text: str) -> Rule:
    def rule(facts: Facts) -> Finding:
        return Finding(True, text, "Tenantry design (docs/)", facts.generated_at)

    return rule


# -- findings from the audit -------------------------------------------------------------------


def audit_intact(facts: Facts) -> Finding:
    audit = facts.audit
    if not audit.reports:
        return Finding(None, "no audit stream to verify", "audit verify (run now)")
    if audit.failures:
        first = audit.failures[0]
        where = f" at seq {first.seq}" if first.seq is not None else ""
        return Finding(
            False,
            f"audit verify FAILED: {len(audit.failures)} stream(s); first: {first.tenant_id}{where}: {first.reason}",
            "audit verify (run now)",
            audit.verified_at,
        )
    checkpoints = sum(r.checkpoints for r in audit.reports)
    return Finding(
        True,
        f"audit verify: {len(audit.reports)} streams, {sum(r.records for r in audit.reports)} records intact,"
        f" {checkpoints} signed checkpoints",
        "audit verify (run now)",
        audit.verified_at,
    )


def audit_records(facts: Facts) -> Finding:
    audit = facts.audit
    if audit.records == 0 or audit.last is None:
        return Finding(None, "no audit records yet", "audit streams")
    top = ", ".join(f"{k} {n}" for k, n in audit.events.most_common(4))
    return Finding(
        True,
        f"{audit.records} records from {audit.first:%Y-%m-%d} to {audit.last:%Y-%m-%d %H:%M} UTC ({top})",
        "audit streams",
        audit.last,
    )


def denials(facts: Facts) -> Finding:
    total = sum(sum(days.values()) for days in facts.audit.denials.values())
    return Finding(
        True,
        f"{total} refusals recorded in the last 30 days across {len(facts.audit.denials)} tenants (chart)",
        "audit streams",
        facts.audit.verified_at,
    )


def halts_used(facts: Facts) -> Finding:
    halts = facts.audit.halts
    now = f"; halted now: {', '.join(facts.halted_now)}" if facts.halted_now else ""
    if not halts:
        return Finding(
            None, "the kill switch was never used: no tenant_halted in the audit (exercise it)" + now, "audit streams"
        )
    last = halts[-1]
    who = f" by {last.actor}" if last.actor else ""
    why = f" ({last.reason})" if last.reason else ""
    return Finding(
        True,
        f"{len(halts)} halts, {facts.audit.resumes} resumes;"
        f" last: {last.tenant} at {last.at:%Y-%m-%d %H:%M}{who}{why}{now}",
        "audit streams",
        last.at,
    )


# -- findings from the probe, the key store and the lifecycle log --------------------------------


def probe(groups: tuple[str, ...] = ()) -> Rule:
    label = ", ".join(groups) if groups else "every group"

    def rule(facts: Facts) -> Finding:
        run = facts.latest_probe
        if run is None:
            return Finding(None, "no probe run stored (tenantry probe URL ... --data-dir DIR)", "evidence/probe-*.json")
        source = f"evidence/{run.path.name}"
        if not run.intact:
            return Finding(False, "the latest probe run does not match its sha256: not evidence", source, run.at)
        rows = [c for c in run.body.get("checks", []) if not groups or c.get("group") in groups]
        failed = [c["id"] for c in rows if c.get("status") == "fail"]
        passed = [c for c in rows if c.get("status") == "pass"]
        unchecked = [c["id"] for c in rows if c.get("status") == "not_checked"]
        where = f"probe of {run.body.get('url')} ({label})"
        if failed:
            return Finding(False, f"{where}: {len(failed)} failed: {', '.join(failed[:6])}", source, run.at)
        if not passed:
            return Finding(None, f"{where}: nothing checked", source, run.at)
        note = f"; not checked: {', '.join(unchecked[:4])}" if unchecked else ""
        return Finding(True, f"{where}: {len(passed)} checks passed{note}", source, run.at)

    return rule


def key_age(purpose: str) -> Rule:
    def rule(facts: Facts) -> Finding:
        current = [k for k in facts.keys if k.purpose == purpose and k.status == "current"]
        if not current:
            return Finding(None, f"no current {purpose} key in the key store", "key store")
        key = current[0]
        age = (facts.generated_at - key.created).days
        others = sum(1 for k in facts.keys if k.purpose == purpose and k.status == "previous")
        text = f"current {purpose} key {key.kid} ({key.alg}) is {age} days old; {others} previous still verifying"
        if facts.generated_at - key.created > KEY_MAX_AGE:
            return Finding(
                None, text + f": older than {KEY_MAX_AGE.days} days, rotate it (tenantry keys rotate)", "key store"
            )
        return Finding(True, text, "key store", facts.generated_at)

    return rule


def lifecycle(kind: str) -> Rule:
    def rule(facts: Facts) -> Finding:
        source = "evidence/lifecycle.jsonl"
        if facts.lifecycle_unreadable:
            return Finding(False, f"{facts.lifecycle_unreadable} unreadable lines in lifecycle.jsonl", source)
        done = [e for e in facts.lifecycle if e.kind == kind]
        noun = "export" if kind == "export" else "deletion"
        if not done:
            return Finding(None, f"no tenant {noun} recorded yet", source)
        if kind == "deletion" and (bad := [e.tenant for e in done if not e.certificate]):
            return Finding(False, f"deletion without a certificate: {', '.join(bad[:4])}", source, done[-1].at)
        if kind == "deletion" and (lost := [e.tenant for e in done if e.certificate_found is False]):
            return Finding(False, f"deletion certificate file missing: {', '.join(lost[:4])}", source, done[-1].at)
        last = done[-1]
        stores = f", {len(last.stores)} stores" if last.stores else ""
        cert = ", certificate recorded" if last.certificate else ""
        return Finding(
            True,
            f"{len(done)} tenant {noun}(s); last: {last.tenant} at {last.at:%Y-%m-%d %H:%M} by {last.by}{stores}{cert}",
            source,
            last.at,
        )

    return rule


# -- the controls ------------------------------------------------------------------------------

_CONTROLS: list[tuple[str, str, str, tuple[Rule, ...]]] = [
    (
        "SOC 2",
        "CC6.1",
        "Logical access security: authentication and tenant isolation",
        (
            token_policy,
            data_isolation,
            secrets_at_rest,
            key_age("token signing"),
            probe(("tokens", "cross-tenant", "scope")),
        ),
    ),
    (
        "SOC 2",
        "CC6.3",
        "Access authorised by least privilege, and removed",
        (
            by_design(
                "effective tools = token allowed_tools ∩ tenant grants ∩ registered tools;"
                " unknown and ungranted tools refused alike"
            ),
            token_policy,
            probe(("cross-tenant", "tenant override")),
            lifecycle("deletion"),
        ),
    ),
    (
        "SOC 2",
        "CC6.6",
        "Boundary protection against threats from outside",
        (transport_security, boundary, limits, probe(("tokens", "sessions"))),
    ),
    (
        "SOC 2",
        "CC6.7",
        "Restricted transmission and movement of data",
        (
            transport_security,
            by_design("client tokens are never passed to upstream servers; secrets are never returned to agents"),
            lifecycle("export"),
        ),
    ),
    (
        "SOC 2",
        "CC7.2",
        "Monitoring for anomalies and security events",
        (audit_records, audit_intact, alerting, denials),
    ),
    (
        "SOC 2",
        "CC7.3",
        "Evaluating and responding to security events",
        (audit_intact, halts_used, auto_response, retention),
    ),
    ("GDPR", "Art. 15", "Right of access (tenant export)", (lifecycle("export"), audit_intact)),
    ("GDPR", "Art. 17", "Right to erasure (tenant deletion, crypto-shredding)", (lifecycle("deletion"),)),
    ("GDPR", "Art. 20", "Data portability (machine-readable export bundle)", (lifecycle("export"),)),
    (
        "GDPR",
        "Art. 25",
        "Data protection by design and by default",
        (
            data_isolation,
            token_policy,
            by_design("tool arguments are audited as sha256 hashes only, never stored or logged raw"),
            probe(("cross-tenant", "scope", "tenant override")),
        ),
    ),
    ("GDPR", "Art. 30", "Records of processing activities", (inventory, audit_records, retention)),
    (
        "GDPR",
        "Art. 32",
        "Security of processing",
        (
            secrets_at_rest,
            transport_security,
            audit_intact,
            key_age("token signing"),
            key_age("audit checkpoints"),
            probe(),
        ),
    ),
    ("EU AI Act", "Art. 12", "Record-keeping: automatic logging of events", (audit_records, audit_intact, retention)),
    (
        "EU AI Act",
        "Art. 14",
        "Human oversight: stop a tenant's agents",
        (
            by_design("kill switch: tenantry tenant halt ID --reason (console, admin API), obeyed at the next request"),
            halts_used,
            alerting,
            auto_response,
        ),
    ),
    (
        "EU AI Act",
        "Art. 15",
        "Accuracy, robustness and cybersecurity",
        (limits, by_design("audit store down: calls fail closed, never run unaudited"), probe()),
    ),
]


def freshen(finding: Finding, now: datetime, max_age: timedelta) -> Finding:
    if finding.ok is True and finding.at is not None and now - finding.at > max_age:
        age = (now - finding.at).days
        return replace(finding, ok=None, stale=True, text=f"{finding.text} - STALE: {age} days old")
    return finding


def status_of(findings: tuple[Finding, ...]) -> Status:
    if any(f.ok is False for f in findings):
        return "gap"
    if findings and all(f.ok is True for f in findings):
        return "met"
    if any(f.ok is True for f in findings):
        return "partial"
    return "not_evidenced"


def evaluate(facts: Facts, *, max_age: timedelta = DEFAULT_MAX_AGE) -> list[Control]:
    """Every control, judged; evidence older than ``max_age`` no longer counts as holding."""
    controls = []
    for framework, control_id, title, rules in _CONTROLS:
        findings = tuple(freshen(rule(facts), facts.generated_at, max_age) for rule in rules)
        controls.append(Control(framework, control_id, title, status_of(findings), findings))
    return controls
