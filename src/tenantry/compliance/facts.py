"""Everything the report states, read from the running configuration and the stores.

Nothing here judges: :mod:`tenantry.compliance.controls` maps these facts to controls.
The audit streams are verified now (the result is as fresh as the report), and read once
for the events the controls cite (halts, denials, alerts, exports, key rotations).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from tenantry.audit.events import SYSTEM_STREAM
from tenantry.audit.verify import StreamReport, verify_stream
from tenantry.compliance.evidence import LifecycleEvent, ProbeEvidence, lifecycle_events, parse_time, probe_runs
from tenantry.core.settings import Settings
from tenantry.runtime import Runtime

__all__ = ["Facts", "AuditFacts", "KeyFacts", "Halt", "gather", "TREND_DAYS", "DENIAL_EVENTS"]

TREND_DAYS = 30
DENIAL_EVENTS = frozenset({"tool_denied", "access_denied", "session_hijack_attempt", "token_refused"})


@dataclass(frozen=True)
class Halt:
    tenant: str
    at: datetime
    actor: str | None
    reason: str | None


@dataclass
class AuditFacts:
    verified_at: datetime
    reports: list[StreamReport]
    records: int = 0
    first: datetime | None = None
    last: datetime | None = None
    events: Counter[str] = field(default_factory=Counter)
    halts: list[Halt] = field(default_factory=list)
    resumes: int = 0
    denials: dict[str, dict[str, int]] = field(default_factory=dict)
    """tenant -> ``YYYY-MM-DD`` -> denials that day (the last :data:`TREND_DAYS` days)."""
    last_event: dict[str, datetime] = field(default_factory=dict)
    """event type -> when it last happened."""

    @property
    def intact(self) -> bool:
        return all(r.ok for r in self.reports)

    @property
    def failures(self) -> list[StreamReport]:
        return [r for r in self.reports if not r.ok]


@dataclass(frozen=True)
class KeyFacts:
    purpose: str
    kid: str
    alg: str
    status: str
    created: datetime


@dataclass
class Facts:
    generated_at: datetime
    settings: Settings
    public_url: str
    tenants: int
    halted_now: list[str]
    tiers: Counter[str]
    audit: AuditFacts
    keys: list[KeyFacts]
    probes: list[ProbeEvidence]
    lifecycle: list[LifecycleEvent]
    lifecycle_unreadable: int
    secrets_key: str
    """Where the tenants' data keys are wrapped from: ``configured`` or ``key file``."""

    @property
    def latest_probe(self) -> ProbeEvidence | None:
        return self.probes[0] if self.probes else None


def _keys(runtime: Runtime, now: float) -> list[KeyFacts]:
    found: list[KeyFacts] = []
    for purpose, ring in (("token signing", runtime.keys), ("audit checkpoints", runtime.audit_keys)):
        if not ring.path.is_file():
            continue
        for key in ring.all():
            created = datetime.fromtimestamp(key.created_at, UTC)
            found.append(KeyFacts(purpose, key.kid, key.alg, key.state(now), created))
    return found


def _read_events(facts: AuditFacts, store: Any, streams: list[str], now: datetime) -> None:
    since = (now - timedelta(days=TREND_DAYS - 1)).date()
    days: dict[str, Counter[str]] = defaultdict(Counter)
    for tenant in streams:
        for stored in store.read(tenant):
            facts.records += 1
            record = json.loads(stored.record)
            at = parse_time(record.get("timestamp")) or datetime.fromtimestamp(stored.created, UTC)
            facts.first = at if facts.first is None or at < facts.first else facts.first
            facts.last = at if facts.last is None or at > facts.last else facts.last
            kind = str(record.get("event_type"))
            facts.events[kind] += 1
            if kind not in facts.last_event or at > facts.last_event[kind]:
                facts.last_event[kind] = at
            if kind == "tenant_halted":
                facts.halts.append(Halt(tenant, at, record.get("actor"), record.get("reason")))
            elif kind == "tenant_resumed":
                facts.resumes += 1
            denied = kind in DENIAL_EVENTS or record.get("result_status") in ("denied", "rejected")
            if denied and at.date() >= since and tenant != SYSTEM_STREAM:
                days[tenant][at.date().isoformat()] += 1
    facts.denials = {tenant: dict(counts) for tenant, counts in sorted(days.items())}
    facts.halts.sort(key=lambda h: h.at)


def _audit(runtime: Runtime, now: datetime) -> AuditFacts:
    store = runtime.audit_store()
    try:
        signer = runtime.checkpoint_signer()
        heads = store.heads()
        streams = store.streams()
        reports = [verify_stream(store, signer, t, head=heads.get(t)) for t in streams]
        facts = AuditFacts(verified_at=datetime.now(UTC), reports=reports)
        _read_events(facts, store, streams, now)
    finally:
        store.close()
    return facts


def gather(runtime: Runtime, *, now: datetime | None = None) -> Facts:
    """Read every fact the report states.

    :raises StorageError: a store cannot be read.
    """
    at = now or datetime.now(UTC)
    tenants = runtime.store.list_tenants()
    events, unreadable = lifecycle_events(runtime.data_dir)
    settings = runtime.settings
    return Facts(
        generated_at=at,
        settings=settings,
        public_url=runtime.endpoints.public_url,
        tenants=len(tenants),
        halted_now=sorted(t.id for t in tenants if t.halted),
        tiers=Counter(t.tier for t in tenants),
        audit=_audit(runtime, at),
        keys=_keys(runtime, at.timestamp()),
        probes=probe_runs(runtime.data_dir),
        lifecycle=events,
        lifecycle_unreadable=unreadable,
        secrets_key="configured" if settings.secrets.master_key is not None else "key file",
    )
