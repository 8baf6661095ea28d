"""Metric labels come from fixed vocabularies: free text in a reason never becomes a time series."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from tenantry.audit.events import AuditEvent
from tenantry.server.metrics import TenantMetrics


def _scrape(metrics: TenantMetrics) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics)
    return generate_latest(registry).decode()


def test_summary_records_of_unrecorded_refusals_add_no_label_per_count() -> None:
    metrics = TenantMetrics(tools=lambda tenant_id: ["whoami"])
    for total in range(1, 200):
        metrics.observe(
            AuditEvent(
                event_type="connection_rejected",
                tenant_id="_system",
                result_status="rejected",
                reason=f"{total} further refused requests not recorded one by one (audit record budget)",
                detail={"suppressed": total},
            )
        )
        metrics.observe(
            AuditEvent(
                event_type="tool_denied",
                tenant_id="acme",
                result_status="denied",
                reason=f"{total} further calls refused by the tenant's limits, not recorded one by one",
                detail={"suppressed": total},
            )
        )
    metrics.observe(
        AuditEvent(
            event_type="connection_rejected",
            tenant_id="_system",
            result_status="rejected",
            reason="invalid_credential: bad token",
        )
    )
    text = _scrape(metrics)
    rejected = [line for line in text.splitlines() if line.startswith("tenantry_connections_rejected_total{")]
    denied = [line for line in text.splitlines() if line.startswith("tenantry_denials_total{")]
    assert sorted(rejected) == [
        'tenantry_connections_rejected_total{code="_unrecorded",tenant="_system"} 19900.0',
        'tenantry_connections_rejected_total{code="invalid_credential",tenant="_system"} 1.0',
    ]
    assert denied == ['tenantry_denials_total{reason="_unrecorded",tenant="acme"} 19900.0']


def test_a_reason_that_is_not_a_code_is_counted_as_other() -> None:
    metrics = TenantMetrics(tools=lambda tenant_id: ["whoami"])
    for text in ("Not A Code", "x" * 80, "protocol_error -32602"):
        metrics.observe(AuditEvent(event_type="tool_denied", tenant_id="acme", result_status="denied", reason=text))
    lines = [line for line in _scrape(metrics).splitlines() if line.startswith("tenantry_denials_total{")]
    assert lines == ['tenantry_denials_total{reason="_other",tenant="acme"} 3.0']
