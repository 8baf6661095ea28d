"""The dispatcher's invoker seam in gateway mode: upstream tools go to the upstream invoker, after the
same admission as native tools (grants, token, the upstream's schema) and with the same outcome
(redaction, audit naming the upstream); native tools never reach it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mcp_types import CallToolResult, TextContent, Tool

import tenantry
from tenantry.controlplane.directory import TenantDirectory
from tenantry.controlplane.sqlite import SqliteTenantStore
from tenantry.framework.dispatcher import Dispatcher
from tenantry.framework.invoker import Invocation
from tenantry.gateway.naming import map_tools
from tenantry.gateway.tools import upstream_tool_definition
from tests.unit.test_dispatcher import RecordingSink, caller, data_scopes

pytestmark = pytest.mark.anyio

SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"], "additionalProperties": True}


class MockUpstream:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.cancelled: list[str] = []

    async def invoke(self, call: Invocation) -> Any:
        self.calls.append((call.target.name, call.arguments))
        return CallToolResult(
            content=[TextContent(type="text", text=f"n={call.arguments['n']} key=acme-upstream-key")],
            _meta={"io.tenantry/error": {"code": "spoofed"}},
        )

    def cancel_tenant(self, tenant_id: str) -> int:
        self.cancelled.append(tenant_id)
        return 1


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Dispatcher, RecordingSink, MockUpstream]:
    app = tenantry.App()

    @app.tool()
    async def native() -> str:
        return "native"

    exposed, _ = map_tools("crm", [Tool(name="count", input_schema=SCHEMA)], app.capability_names(), max_tools=10)
    app.replace_upstream_tools("crm", [upstream_tool_definition("crm", e, None) for e in exposed])
    store = SqliteTenantStore(tmp_path / "control.sqlite3")
    store.create_tenant("acme", tools=["native", "crm__count"])
    store.create_tenant("globex", tools=["native"])
    scopes = data_scopes(tmp_path, store)
    scopes.secrets.set_secret("acme", "crm_key", "acme-upstream-key")
    directory = TenantDirectory(store)
    directory.refresh(force=True)
    sink, upstream = RecordingSink(), MockUpstream()
    return Dispatcher(app, directory, scopes, sink, upstream_invoker=upstream), sink, upstream


async def test_an_upstream_tool_runs_on_the_upstream_invoker_with_the_native_outcome(setup) -> None:
    dispatcher, sink, upstream = setup
    result = await dispatcher.call_tool(caller("acme", {"native", "crm__count"}), "crm__count", {"n": 3, "extra": 1})
    assert upstream.calls == [("crm__count", {"n": 3, "extra": 1})]  # the upstream's schema allows extras
    assert result.content[0].text == "n=3 key=[redacted]"
    assert result.meta is None  # the upstream's _meta is not passed on
    done = [e for e in sink.events if e.event_type == "tool_call"]
    assert done[-1].detail == {"upstream": "crm", "upstream_tool": "count"} and done[-1].result_status == "ok"


async def test_native_tools_never_reach_the_upstream_invoker(setup) -> None:
    dispatcher, _, upstream = setup
    result = await dispatcher.call_tool(caller("acme", {"native"}), "native", {})
    assert result.structured_content == {"result": "native"} and upstream.calls == []


@pytest.mark.parametrize(
    ("tenant", "tools", "arguments", "code"),
    [
        ("globex", {"crm__count"}, {"n": 1}, "tool_unavailable"),  # not granted to the tenant
        ("acme", {"native"}, {"n": 1}, "tool_unavailable"),  # not in the token
        ("acme", {"crm__count"}, {"n": "one"}, "invalid_arguments"),  # the upstream's own schema
        ("acme", {"crm__count"}, {}, "invalid_arguments"),
    ],
)
async def test_upstream_calls_are_admitted_like_native_ones(
    setup, tenant: str, tools: set[str], arguments: dict[str, Any], code: str
) -> None:
    dispatcher, sink, upstream = setup
    with pytest.raises(tenantry.TenantryError) as refused:
        await dispatcher.call_tool(caller(tenant, tools), "crm__count", arguments)
    assert refused.value.code == code and upstream.calls == []
    assert sink.events[-1].event_type == "tool_denied"


async def test_a_halt_reaches_the_upstream_invoker(setup) -> None:
    dispatcher, _, upstream = setup
    assert dispatcher.cancel_tenant_calls("acme") == 1
    assert upstream.cancelled == ["acme"]
