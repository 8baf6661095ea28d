"""What a probe run found: one row per check, each pass, fail or not checked."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

__all__ = ["Status", "Check", "ProbeRun", "PROBE_FORMAT"]

Status = Literal["pass", "fail", "not_checked"]
PROBE_FORMAT = "tenantry-probe/1"


@dataclass(frozen=True)
class Check:
    """One row of the table. ``control`` says which positive control stood beside the refusal:
    a refusal only passes when the same server, asked the legitimate thing, served it."""

    id: str
    group: str
    title: str
    status: Status
    detail: str
    control: str = ""


@dataclass
class ProbeRun:
    url: str
    started: str = field(default_factory=lambda: datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    finished: str = ""
    checks: list[Check] = field(default_factory=list)
    tenants: dict[str, str | None] = field(default_factory=dict)
    """``a``/``b`` -> the tenant each token was seen as (``None`` when the server did not say)."""
    exchanges: int = 0

    def add(self, check: Check) -> None:
        self.checks.append(check)

    def counts(self) -> dict[str, int]:
        counts = {"pass": 0, "fail": 0, "not_checked": 0}
        for check in self.checks:
            counts[check.status] += 1
        return counts

    @property
    def failed(self) -> bool:
        return any(c.status == "fail" for c in self.checks)

    def ok(self, *, strict: bool = False) -> bool:
        """No failure (and with ``strict``, nothing left unchecked either)."""
        if strict:
            return all(c.status == "pass" for c in self.checks) and bool(self.checks)
        return not self.failed and bool(self.checks)

    def to_json(self, *, strict: bool = False) -> dict[str, Any]:
        """The run as stored evidence; ``sha256`` covers every other field (canonical JSON)."""
        body = {
            "format": PROBE_FORMAT,
            "url": self.url,
            "started": self.started,
            "finished": self.finished,
            "tenants": self.tenants,
            "exchanges": self.exchanges,
            "summary": self.counts(),
            "strict": strict,
            "result": "pass" if self.ok(strict=strict) else "fail",
            "checks": [asdict(c) for c in self.checks],
        }
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        body["sha256"] = hashlib.sha256(canonical).hexdigest()
        return body
