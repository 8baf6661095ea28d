"""Prometheus metrics labelled by tenant, computed from the audit events.

Counting is a dictionary increment on the hot path; the Prometheus families are built
only when ``/metrics`` is scraped. Label cardinality is bounded: the first
``max_tenant_labels`` tenants seen get their own ``tenant`` label and every later one is
counted as ``_other``; ``tool`` is a registered tool name or ``_unknown``; ``reason`` and
``status`` come from fixed vocabularies (a reason that is not a code counts as ``_other``;
refusals only counted in a summary record, as ``_unrecorded``).
"""

from __future__ import annotations

import bisect
import hmac
import re
from collections import defaultdict
from collections.abc import Callable, Collection, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tenantry.audit.events import AuditEvent

__all__ = ["TenantMetrics", "OTHER_TENANTS", "UNRECORDED", "metrics_route"]

OTHER_TENANTS = "_other"
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


UNRECORDED = "_unrecorded"
"""The reason label of refusals over the audit record budget (counted from their summary record)."""

_LABEL = re.compile(r"[a-z][a-z0-9_]{0,47}")


def _reason_label(event: AuditEvent, default: str) -> tuple[str, int]:
    """A bounded label for an event's reason (its leading ``code:``) and how many it counts for.

    Reasons lead with a code from a fixed vocabulary; anything else (a summary record's
    sentence with its count, free text) must never become a label of its own, or each
    distinct text would add a time series.
    """
    suppressed = event.detail.get("suppressed")
    if isinstance(suppressed, int) and not isinstance(suppressed, bool) and suppressed > 0:
        return UNRECORDED, suppressed
    head = (event.reason or default).split(":", 1)[0].strip()
    return (head if _LABEL.fullmatch(head) else "_other"), 1


class TenantMetrics(Collector):
    """An audit observer and a Prometheus collector in one."""

    def __init__(
        self,
        *,
        tools: Callable[[str], Collection[str]],
        max_tenant_labels: int = 100,
        gauges: Callable[[], dict[str, tuple[str, float]]] = dict,
    ) -> None:
        """:param tools: the tool names registered for a tenant, consulted live (the server passes
        ``app.tools_for``): upstream tools come and go, and some are one tenant's own."""
        self._tools = tools
        self._max_tenants = max_tenant_labels
        self._labelled: set[str] = set()
        self._gauges = gauges
        self._calls: defaultdict[tuple[str, str, str], int] = defaultdict(int)
        self._denials: defaultdict[tuple[str, str], int] = defaultdict(int)
        self._rejections: defaultdict[tuple[str, str], int] = defaultdict(int)
        self._alerts: defaultdict[tuple[str, str], int] = defaultdict(int)
        self._latency: dict[str, list[int]] = {}
        self._latency_sum: defaultdict[str, float] = defaultdict(float)

    def _tenant(self, tenant_id: str) -> str:
        if tenant_id in self._labelled:
            return tenant_id
        if len(self._labelled) < self._max_tenants:
            self._labelled.add(tenant_id)
            return tenant_id
        return OTHER_TENANTS

    def observe(self, event: AuditEvent) -> None:
        kind = event.event_type
        if kind == "tool_call":
            tenant = self._tenant(event.tenant_id)
            name = event.tool_name
            tool = name if name is not None and name in self._tools(event.tenant_id) else "_unknown"
            self._calls[(tenant, tool, event.result_status)] += 1
            if event.latency_ms is not None:
                seconds = event.latency_ms / 1000
                counts = self._latency.get(tenant)
                if counts is None:
                    counts = self._latency[tenant] = [0] * (len(_BUCKETS) + 1)
                counts[bisect.bisect_left(_BUCKETS, seconds)] += 1
                self._latency_sum[tenant] += seconds
        elif kind in ("tool_denied", "access_denied", "session_hijack_attempt"):
            reason, count = _reason_label(event, kind)
            self._denials[(self._tenant(event.tenant_id), reason)] += count
        elif kind == "connection_rejected":
            code, count = _reason_label(event, "unknown")
            self._rejections[(self._tenant(event.tenant_id), code)] += count
        elif kind == "anomaly_alert":
            alert, _ = _reason_label(event, "alert")
            self._alerts[(self._tenant(event.tenant_id), alert)] += 1

    def collect(self) -> Iterator[Metric]:
        calls = CounterMetricFamily("tenantry_tool_calls", "Tool calls by outcome", labels=["tenant", "tool", "status"])
        for (tenant, tool, status), value in sorted(self._calls.items()):
            calls.add_metric([tenant, tool, status], value)
        yield calls
        denials = CounterMetricFamily(
            "tenantry_denials", "Refused calls, reads and sessions", labels=["tenant", "reason"]
        )
        for (tenant, reason), value in sorted(self._denials.items()):
            denials.add_metric([tenant, reason], value)
        yield denials
        rejections = CounterMetricFamily(
            "tenantry_connections_rejected", "Requests refused at authentication", labels=["tenant", "code"]
        )
        for (tenant, code), value in sorted(self._rejections.items()):
            rejections.add_metric([tenant, code], value)
        yield rejections
        alerts = CounterMetricFamily("tenantry_anomaly_alerts", "Anomaly alerts raised", labels=["tenant", "kind"])
        for (tenant, kind), value in sorted(self._alerts.items()):
            alerts.add_metric([tenant, kind], value)
        yield alerts
        latency = HistogramMetricFamily(
            "tenantry_tool_call_duration_seconds", "Tool call latency through the full path", labels=["tenant"]
        )
        for tenant, counts in sorted(self._latency.items()):
            cumulative: int = 0
            buckets: list[tuple[str, float]] = []
            for bound, count in zip((*_BUCKETS, float("inf")), counts, strict=True):
                cumulative += count
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            latency.add_metric([tenant], buckets, self._latency_sum[tenant])
        yield latency
        for name, (help_text, reading) in self._gauges().items():
            yield GaugeMetricFamily(name, help_text, value=reading)


def metrics_route(metrics: TenantMetrics, token: str) -> Route:
    """``GET /metrics`` in the Prometheus text format; always behind the bearer ``token`` (tenant
    ids, call counts and denials are nobody else's business)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics)
    expected = f"Bearer {token}".encode()

    async def scrape(request: Request) -> Response:
        scheme, _, credential = request.headers.get("authorization", "").partition(" ")
        supplied = f"Bearer {credential.strip()}" if scheme.lower() == "bearer" else ""
        if not hmac.compare_digest(supplied.encode(), expected):
            return JSONResponse(
                {
                    "error": "invalid_token",
                    "error_description": "metrics need the bearer token"
                    " (metrics.token, or <data_dir>/keys/metrics.token)",
                },
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="metrics"', "Cache-Control": "no-store"},
            )
        return Response(
            generate_latest(registry), media_type=CONTENT_TYPE_LATEST, headers={"Cache-Control": "no-store"}
        )

    return Route("/metrics", scrape, methods=["GET"])
