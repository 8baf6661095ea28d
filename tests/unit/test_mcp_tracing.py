"""The SDK's per-request OpenTelemetry span is kept only when a tracer provider is installed."""

from __future__ import annotations

from typing import Any

import pytest
from mcp.server._otel import OpenTelemetryMiddleware
from mcp.server.request_state import RequestStateBoundary
from opentelemetry import trace

from tenantry.server import mcp as mcp_surface
from tests.unit.test_dispatcher import setup  # noqa: F401  (fixture)


class _InstalledProvider(trace.TracerProvider):
    def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
        return trace.NoOpTracer()


def _middleware_types(setup: Any) -> list[type]:  # noqa: F811
    dispatcher = setup[0]
    server = mcp_surface.build_mcp_server(dispatcher, mcp_surface.http_caller)
    return [type(m) for m in server.middleware]


def test_without_a_tracer_provider_no_span_is_opened_per_request(setup: Any) -> None:  # noqa: F811
    types = _middleware_types(setup)
    assert OpenTelemetryMiddleware not in types
    assert RequestStateBoundary in types


def test_with_a_tracer_provider_installed_requests_are_traced(
    setup: Any,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: _InstalledProvider())
    types = _middleware_types(setup)
    assert OpenTelemetryMiddleware in types
    assert RequestStateBoundary in types
