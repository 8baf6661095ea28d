"""What every check shares: the wire, both tokens' views, and where results go."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tenantry.probe.discovery import View
from tenantry.probe.results import Check, ProbeRun, Status
from tenantry.probe.wire import Reply, Wire

__all__ = ["ProbeOptions", "ProbeContext"]

_SHOWN_PROBLEMS = 4


@dataclass(frozen=True)
class ProbeOptions:
    url: str
    token_a: str
    token_b: str
    token_expired: str | None = None
    """A genuinely signed token that has expired (e.g. ``tenantry token issue --ttl 1s``)."""
    audit_data_dir: Path | None = None
    """Audit access: a Tenantry data dir whose streams ``tenantry audit export`` can read."""
    timeout: float = 30.0


@dataclass
class ProbeContext:
    options: ProbeOptions
    wire: Wire
    a: View
    b: View
    run: ProbeRun
    sessionless: bool = False
    """The deployment serves the sessionless 2026-07-28 era (token A's ``tools/list`` served)."""
    nonce: str = field(default_factory=lambda: secrets.token_hex(4))

    def record(self, id: str, group: str, title: str, status: Status, detail: str, control: str = "") -> None:
        self.run.add(Check(id=id, group=group, title=title, status=status, detail=detail, control=control))

    def conclude(self, id: str, group: str, title: str, problems: list[str], passed: str, control: str) -> None:
        """A row that fails with every problem found, and passes (saying ``passed``) without one."""
        status: Status = "fail" if problems else "pass"
        shown = "; ".join(problems[:_SHOWN_PROBLEMS])
        if len(problems) > _SHOWN_PROBLEMS:
            shown += f"; and {len(problems) - _SHOWN_PROBLEMS} more"
        self.record(id, group, title, status, shown or passed, control)

    def other_tenant(self, of: View) -> str:
        """The other token's tenant, or a made-up one when the server named neither."""
        other = self.b if of is self.a else self.a
        return other.tenant or f"probe-other-{self.nonce}"

    def unknown_name(self) -> str:
        return f"probe_no_such_{self.nonce}"

    async def call_tool(self, view: View, name: str, arguments: dict[str, Any], **kwargs: Any) -> Reply:
        return await view.call("tools/call", {"name": name, "arguments": arguments}, **kwargs)
