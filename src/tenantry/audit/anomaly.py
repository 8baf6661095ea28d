"""Per-tenant anomaly detection over the audit events a server records.

Each tenant is judged against its own recent behaviour, never against other tenants:

* ``denial_burst`` — many refusals (tools, resources, prompts, scope checks) in a short window;
* ``rate_spike`` — calls this minute far above the tenant's own recent per-minute baseline;
* ``new_address`` — a call from an address the tenant has not used before (after its first);
* ``cross_tenant_attempt`` — a tool that exists only for other tenants, a path naming another
  tenant, a traversal or foreign prefix refused by the scope checks, or another principal's
  session id.

Observing is cheap and synchronous (it runs on the event loop after each durable record);
alerts go to the registered handlers (audit record, log line, webhook), each kind at most
once per tenant per cooldown.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from tenantry.audit.events import SYSTEM_STREAM, AuditEvent
from tenantry.core.identity import Principal

__all__ = ["AnomalyDetector", "AnomalyAlert", "AnomalyThresholds"]

logger = logging.getLogger(__name__)

_DENIALS = frozenset({"tool_denied", "access_denied", "session_hijack_attempt"})
_CALLS = frozenset({"tool_call", "resource_read", "prompt_get"})
_CROSS_TENANT_REASONS = frozenset({"scope_violation", "session_hijack_attempt"})


@dataclass(frozen=True)
class AnomalyThresholds:
    denial_burst: int = 10
    denial_window: float = 60.0
    rate_factor: float = 5.0
    rate_floor: int = 60
    """Calls per minute below which no rate spike is reported, whatever the baseline."""
    baseline_minutes: int = 5
    """Minutes of history needed before a rate spike can be judged."""
    cooldown: float = 300.0
    max_addresses: int = 1000
    """Addresses remembered per tenant (the least recently seen are forgotten first)."""
    new_address_alerts: int = 10
    """``new_address`` alerts per tenant per cooldown: a tenant's credential used from a stream
    of made-up (or IPv6) addresses must not raise, and record, one alert per address."""


@dataclass(frozen=True)
class AnomalyAlert:
    tenant_id: str
    kind: str
    message: str
    detail: dict[str, Any] = field(default_factory=dict)
    created: float = field(default_factory=time.time)
    principal: Principal | None = field(default=None, repr=False)
    """The credential behind the event that raised the alert (for automatic response), if known."""


@dataclass
class _TenantState:
    denials: deque[float] = field(default_factory=deque)
    minute: int = 0
    calls_this_minute: int = 0
    baseline: float = 0.0
    minutes_seen: int = 0
    addresses: OrderedDict[str, None] = field(default_factory=OrderedDict)
    last_alert: dict[str, float] = field(default_factory=dict)
    """Alert key -> when it last fired; most recent last, at most ``max_addresses`` + kinds."""
    address_alerts: deque[float] = field(default_factory=deque)


AlertHandler = Callable[[AnomalyAlert], None]


class AnomalyDetector:
    """An :class:`~tenantry.audit.writer.AuditObserver`.

    :param foreign_tools: ``tenant_id -> tool names that exist only for other tenants``.
    :param tenant_ids: every tenant id (a path component naming another one is an attempt).
    """

    def __init__(
        self,
        thresholds: AnomalyThresholds | None = None,
        *,
        foreign_tools: Callable[[str], Collection[str]] = lambda tenant: (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._thresholds = thresholds or AnomalyThresholds()
        self._foreign_tools = foreign_tools
        self._clock = clock
        self._tenants: dict[str, _TenantState] = {}
        self._handlers: list[AlertHandler] = []

    def add_handler(self, handler: AlertHandler) -> None:
        self._handlers.append(handler)

    def know_address(self, tenant_id: str, address: str) -> None:
        """Seed an address as already seen (from the audit history at start-up)."""
        self._remember(self._state(tenant_id), address)

    def remembered(self, tenant_id: str) -> int:
        """How many per-caller entries (addresses, alert keys, recent times) the tenant's state holds."""
        state = self._tenants.get(tenant_id)
        if state is None:
            return 0
        return len(state.addresses) + len(state.last_alert) + len(state.denials) + len(state.address_alerts)

    def observe(self, event: AuditEvent) -> None:
        tenant_id = event.tenant_id
        if tenant_id == SYSTEM_STREAM or event.event_type == "anomaly_alert":
            return
        principal = event.principal
        if principal is None or principal.tenant_id != tenant_id:
            # Only what a tenant's own principals did counts against it: the copy of an attempt
            # made *against* the tenant (another principal presenting its session id) must never
            # add to its denials, or an attacker could get the victim revoked or halted.
            return
        state = self._state(tenant_id)
        now = event.created
        if event.event_type in _DENIALS or (event.event_type == "tool_call" and event.result_status == "denied"):
            self._denial(state, event, now)
        if event.event_type in _CALLS:
            self._rate(state, event, now)
        if event.ip_address and event.event_type != "connection_rejected":
            self._address(state, event)
        self._cross_tenant(state, event)

    # -- rules ------------------------------------------------------------------------------

    def _denial(self, state: _TenantState, event: AuditEvent, now: float) -> None:
        limits = self._thresholds
        state.denials.append(now)  # at most denial_burst kept: enough to tell a burst
        while state.denials and state.denials[0] < now - limits.denial_window:
            state.denials.popleft()
        if len(state.denials) >= limits.denial_burst:
            self._alert(
                state,
                event.tenant_id,
                "denial_burst",
                f"{len(state.denials)} refusals within {limits.denial_window:g}s",
                {"count": len(state.denials), "window_seconds": limits.denial_window, "subject": event.subject},
                principal=event.principal,
            )

    def _rate(self, state: _TenantState, event: AuditEvent, now: float) -> None:
        limits = self._thresholds
        minute = int(now // 60)
        if minute != state.minute:
            if state.minute:
                for _ in range(min(minute - state.minute, 60)):  # idle minutes count as zero
                    state.baseline = (
                        state.calls_this_minute
                        if state.minutes_seen == 0
                        else 0.8 * state.baseline + 0.2 * state.calls_this_minute
                    )
                    state.minutes_seen += 1
                    state.calls_this_minute = 0
            state.minute = minute
            state.calls_this_minute = 0
        state.calls_this_minute += 1
        threshold = max(limits.rate_floor, limits.rate_factor * state.baseline)
        if state.minutes_seen >= limits.baseline_minutes and state.calls_this_minute > threshold:
            self._alert(
                state,
                event.tenant_id,
                "rate_spike",
                f"{state.calls_this_minute} calls this minute, baseline {state.baseline:.1f}/min",
                {"calls_this_minute": state.calls_this_minute, "baseline_per_minute": round(state.baseline, 1)},
                principal=event.principal,
            )

    def _address(self, state: _TenantState, event: AuditEvent) -> None:
        address = event.ip_address
        assert address is not None
        if address in state.addresses:
            state.addresses.move_to_end(address)
            return
        first = not state.addresses
        self._remember(state, address)
        if not first and self._address_alert_allowed(state, event.created):
            self._alert(
                state,
                event.tenant_id,
                "new_address",
                f"calls from a new address {address}",
                {"ip_address": address, "subject": event.subject},
                key=f"new_address:{address}",
                principal=event.principal,
            )

    def _cross_tenant(self, state: _TenantState, event: AuditEvent) -> None:
        why: str | None = None
        if event.event_type == "session_hijack_attempt" and event.reason == "session belongs to another principal":
            why = "presented another principal's session id"
        elif event.reason in _CROSS_TENANT_REASONS and event.event_type in ("tool_denied", "tool_call"):
            why = "a resource outside its partition or prefix (traversal or foreign prefix)"
        # A refusal must look the same whether the name exists for another tenant or not; an
        # alert whose trigger depends on that may inform the operator, but must never cause an
        # action the caller can observe (``actionable`` is false: no automatic response).
        actionable = True
        foreign = event.event_type == "tool_denied" and event.tool_name in self._foreign_tools(event.tenant_id)
        if why is None and foreign:
            why, actionable = "a tool that exists only for another tenant", False
        elif why is None and event.detail.get("cross_tenant_reference"):
            why = "a path naming another tenant"
        if why is not None:
            self._alert(
                state,
                event.tenant_id,
                "cross_tenant_attempt",
                f"attempt to reach another tenant's resources: {why}",
                {
                    "tool_name": event.tool_name,
                    "subject": event.subject,
                    "request_id": event.request_id,
                    **({} if actionable else {"actionable": False}),
                },
                # Its own cooldown: it must not silence (or be silenced by) an actionable alert either.
                key=None if actionable else "cross_tenant_attempt:not_actionable",
                principal=event.principal,
            )

    # -- plumbing ---------------------------------------------------------------------------

    def _state(self, tenant_id: str) -> _TenantState:
        state = self._tenants.get(tenant_id)
        if state is None:
            state = self._tenants[tenant_id] = _TenantState(denials=deque(maxlen=self._thresholds.denial_burst))
        return state

    def _address_alert_allowed(self, state: _TenantState, now: float) -> bool:
        recent = state.address_alerts
        while recent and recent[0] <= now - self._thresholds.cooldown:
            recent.popleft()
        if len(recent) >= self._thresholds.new_address_alerts:
            return False
        recent.append(now)
        return True

    def _remember(self, state: _TenantState, address: str) -> None:
        state.addresses[address] = None
        while len(state.addresses) > self._thresholds.max_addresses:
            state.addresses.popitem(last=False)

    def _alert(
        self,
        state: _TenantState,
        tenant_id: str,
        kind: str,
        message: str,
        detail: dict[str, Any],
        *,
        key: str | None = None,
        principal: Principal | None = None,
    ) -> None:
        now = self._clock()
        key = key or kind
        if now - state.last_alert.get(key, float("-inf")) < self._thresholds.cooldown:
            return
        state.last_alert.pop(key, None)
        state.last_alert[key] = now
        while len(state.last_alert) > self._thresholds.max_addresses + 8:  # + one key per other kind
            del state.last_alert[next(iter(state.last_alert))]
        alert = AnomalyAlert(
            tenant_id, kind, message, {k: v for k, v in detail.items() if v is not None}, now, principal
        )
        for handler in self._handlers:
            try:
                handler(alert)
            except Exception:  # one failing handler must not silence the others
                logger.exception("anomaly alert handler failed", extra={"tenant_id": tenant_id})
