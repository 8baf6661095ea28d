"""Anomaly rules judge each tenant against its own behaviour, once per cooldown."""

from __future__ import annotations

from tenantry.audit.anomaly import AnomalyAlert, AnomalyDetector, AnomalyThresholds
from tenantry.audit.events import AuditEvent
from tenantry.core.identity import Principal

T0 = 1_800_000_000.0


def detector(**thresholds: float) -> tuple[AnomalyDetector, list[AnomalyAlert]]:
    alerts: list[AnomalyAlert] = []
    now = [T0]
    found = AnomalyDetector(
        AnomalyThresholds(**thresholds),  # type: ignore[arg-type]
        foreign_tools=lambda tenant: {"globex_forecast"} if tenant != "globex" else set(),
        clock=lambda: now[0],
    )
    found.add_handler(alerts.append)
    return found, alerts


def principal_of(tenant: str, subject: str = "agent") -> Principal:
    return Principal(
        issuer="https://issuer.test",
        tenant_id=tenant,
        subject=subject,
        allowed_tools=frozenset(),
        token_id=f"jti-{tenant}-{subject}",
        expires_at=2_000_000_000,
        issued_at=1_000_000_000,
    )


def event(kind: str, tenant: str = "acme", at: float = T0, **fields: object) -> AuditEvent:
    """An event caused by one of the tenant's own principals (unless ``principal`` says otherwise)."""
    fields.setdefault("principal", principal_of(tenant))
    return AuditEvent(event_type=kind, tenant_id=tenant, result_status="ok", created=at, **fields)  # type: ignore[arg-type]


def test_denial_burst_alerts_once_per_cooldown() -> None:
    found, alerts = detector(denial_burst=5, denial_window=60)
    for i in range(12):
        found.observe(event("tool_denied", at=T0 + i, tool_name="nope", reason="not_registered"))
    assert [a.kind for a in alerts] == ["denial_burst"]
    assert alerts[0].tenant_id == "acme"


def test_denials_outside_the_window_do_not_add_up() -> None:
    found, alerts = detector(denial_burst=5, denial_window=10)
    for i in range(12):
        found.observe(event("tool_denied", at=T0 + i * 5, tool_name="nope"))
    assert alerts == []


def test_one_tenants_burst_never_alerts_another() -> None:
    found, alerts = detector(denial_burst=3)
    for i in range(5):
        found.observe(event("tool_denied", tenant="acme", at=T0 + i))
    found.observe(event("tool_denied", tenant="globex", at=T0 + 6))
    assert {a.tenant_id for a in alerts} == {"acme"}


def test_rate_spike_against_the_tenants_own_baseline() -> None:
    found, alerts = detector(rate_factor=5, rate_floor=20, baseline_minutes=5)
    start = T0 - T0 % 60
    for minute in range(6):
        for i in range(8):
            found.observe(event("tool_call", at=start + minute * 60 + i, tool_name="whoami"))
    assert alerts == []
    for i in range(60):
        found.observe(event("tool_call", at=start + 6 * 60 + i * 0.5, tool_name="whoami"))
    assert [a.kind for a in alerts] == ["rate_spike"]
    assert alerts[0].detail["baseline_per_minute"] < 10


def test_busy_tenant_with_a_busy_baseline_is_normal() -> None:
    found, alerts = detector(rate_factor=5, rate_floor=20, baseline_minutes=5)
    start = T0 - T0 % 60
    for minute in range(8):
        for i in range(100):
            found.observe(event("tool_call", at=start + minute * 60 + i * 0.5, tool_name="whoami"))
    assert alerts == []


def test_new_address_after_the_first() -> None:
    found, alerts = detector()
    found.observe(event("tool_call", ip_address="10.0.0.1"))
    found.observe(event("tool_call", ip_address="10.0.0.1"))
    assert alerts == []
    found.observe(event("tool_call", ip_address="203.0.113.9"))
    assert [(a.kind, a.detail["ip_address"]) for a in alerts] == [("new_address", "203.0.113.9")]


def test_known_addresses_from_history_are_not_new() -> None:
    found, alerts = detector()
    found.know_address("acme", "10.0.0.1")
    found.know_address("acme", "10.0.0.2")
    found.observe(event("tool_call", ip_address="10.0.0.2"))
    assert alerts == []


def test_cross_tenant_attempts() -> None:
    cases = [
        event("tool_denied", tool_name="globex_forecast", reason="not_registered"),
        event("tool_denied", tool_name="read_file", reason="scope_violation"),
        event("tool_call", tool_name="read_file", reason="scope_violation"),
        event("session_hijack_attempt", reason="session belongs to another principal"),
        event("tool_call", tool_name="list_files", detail={"cross_tenant_reference": True}),
    ]
    for case in cases:
        found, alerts = detector()
        found.observe(case)
        assert [a.kind for a in alerts] == ["cross_tenant_attempt"], case
    found, alerts = detector()
    found.observe(event("tool_denied", tool_name="globex_forecast", tenant="globex", reason="not_in_token"))
    found.observe(event("tool_denied", tool_name="unknown_tool", reason="not_registered"))
    assert alerts == []


def test_the_victims_side_of_a_hijack_is_not_an_attempt_by_the_victim() -> None:
    found, alerts = detector()
    found.observe(event("session_hijack_attempt", reason="another principal presented this session id"))
    assert alerts == []


def test_attempts_made_against_a_tenant_never_count_toward_its_own_denial_burst() -> None:
    # An attacker of globex holding acme's leaked session id makes many hijack attempts: each is
    # recorded in both streams, but acme's copy was caused by globex's principal (or by nobody
    # acme owns), so acme is never flagged -- with halt_tenant configured it would be halted.
    found, alerts = detector(denial_burst=5)
    attacker = principal_of("globex", "mallory")
    for i in range(20):
        found.observe(
            event(
                "session_hijack_attempt",
                tenant="acme",
                at=T0 + i,
                principal=None,
                reason="another principal presented this session id",
            )
        )
        found.observe(
            event(
                "session_hijack_attempt",
                tenant="globex",
                at=T0 + i,
                principal=attacker,
                reason="session belongs to another principal",
            )
        )
    assert {a.tenant_id for a in alerts} == {"globex"}  # positive control: the attacker is flagged
    assert {a.kind for a in alerts} == {"denial_burst", "cross_tenant_attempt"}


def test_events_of_another_tenants_principal_in_a_stream_are_ignored() -> None:
    found, alerts = detector(denial_burst=3)
    for i in range(10):
        found.observe(event("tool_denied", tenant="acme", at=T0 + i, principal=principal_of("globex")))
    assert alerts == []
    for i in range(3):
        found.observe(event("tool_denied", tenant="acme", at=T0 + i))
    assert [a.kind for a in alerts] == ["denial_burst"]


def test_spoofed_addresses_cannot_grow_a_tenants_state_or_alerts_without_bound() -> None:
    found, alerts = detector(max_addresses=50, new_address_alerts=5, cooldown=300, denial_burst=10)
    for i in range(5000):
        address = f"2001:db8:{i // 65536:x}:{i % 65536:x}::1"
        found.observe(event("tool_denied", at=T0 + i / 100, ip_address=address, reason="not_registered"))
    # Before: one alert-cooldown entry per address ever seen (5000 here), one alert per address.
    assert found.remembered("acme") <= 50 + 50 + 8 + 10 + 5
    assert len([a for a in alerts if a.kind == "new_address"]) == 5


def test_new_address_alerts_resume_after_the_cooldown() -> None:
    found, alerts = detector(new_address_alerts=2, cooldown=60)
    for i, address in enumerate(["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"]):
        found.observe(event("tool_call", at=T0 + i, ip_address=address))
    assert [a.detail["ip_address"] for a in alerts] == ["10.0.0.2", "10.0.0.3"]
    found.observe(event("tool_call", at=T0 + 120, ip_address="10.0.0.9"))
    assert alerts[-1].detail["ip_address"] == "10.0.0.9"


def test_a_refused_name_of_another_tenant_never_triggers_an_automatic_response() -> None:
    # Otherwise the response (a halt, a revoked token) tells the caller which refused names exist
    # for other tenants: "Tool not available" would no longer be the same for both.
    from tenantry.server.response import AutomaticResponse

    found, alerts = detector()
    found.observe(event("tool_denied", tool_name="globex_forecast", reason="not_registered"))
    assert [a.kind for a in alerts] == ["cross_tenant_attempt"] and alerts[0].detail["actionable"] is False
    acted: list[str] = []

    class Recorder(AutomaticResponse):
        async def _respond(self, alert: AnomalyAlert, action: str) -> None:  # pragma: no cover
            acted.append(action)

    from tenantry.core.settings import ResponseSettings

    responder = Recorder(ResponseSettings(cross_tenant_attempt="halt_tenant"), None, None, longest_lifetime=60)  # type: ignore[arg-type]
    responder(alerts[0])
    assert acted == []
    # positive control: an attempt on another tenant's files is acted upon, despite the earlier alert
    found.observe(event("tool_denied", tool_name="read_file", reason="scope_violation"))
    assert alerts[-1].detail.get("actionable", True) is True
