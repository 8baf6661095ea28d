"""The dispatcher's invoker seam in gateway mode: upstream tools, resources and prompts go to the
upstream invoker, after the same admission as native ones (grants, token, the upstream's schema or
declared arguments) and with the same outcome (redaction, audit naming the upstream); native ones
never reach it."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from mcp_types import (
    BlobResourceContents,
    CallToolResult,
    GetPromptResult,
    Prompt,
    PromptArgument,
    PromptMessage,
    ReadResourceResult,
    Resource,
    ResourceTemplate,
    TextContent,
    TextResourceContents,
    Tool,
)

import tenantry
from tenantry.controlplane.directory import TenantDirectory
from tenantry.controlplane.sqlite import SqliteTenantStore
from tenantry.core.errors import UsageError
from tenantry.framework.app import PromptDefinition, ResourceDefinition
from tenantry.framework.dispatcher import Dispatcher, ResourceNotFound
from tenantry.framework.invoker import Invocation
from tenantry.gateway.items import served_read_result, upstream_prompt_definition, upstream_resource_definition
from tenantry.gateway.naming import map_items, map_tools
from tenantry.gateway.tools import upstream_tool_definition
from tests.unit.test_dispatcher import RecordingSink, caller, data_scopes

pytestmark = pytest.mark.anyio

UPSTREAM = ["crm__count", "crm__accounts", "crm__account", "crm__brief"]
SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"], "additionalProperties": True}


class MockUpstream:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.cancelled: list[str] = []

    async def invoke(self, call: Invocation) -> Any:
        self.calls.append((call.target.name, call.arguments))
        if isinstance(call.target, ResourceDefinition):
            # What the real invoker hands back: the upstream's contents under their exposed URIs.
            own = str(call.arguments["uri"]).removeprefix("upstream://crm/")
            return served_read_result(
                "crm",
                ReadResourceResult(
                    contents=[
                        TextResourceContents(uri=own, text=f"{own} key=acme-upstream-key"),
                        BlobResourceContents(uri=own, blob=base64.b64encode(b"raw acme-upstream-key").decode()),
                    ],
                    _meta={"io.tenantry/error": {"code": "spoofed"}},
                ),
            )
        if isinstance(call.target, PromptDefinition):
            text = f"summarise {call.arguments['topic']} with acme-upstream-key"
            return GetPromptResult(messages=[PromptMessage(role="user", content=TextContent(type="text", text=text))])
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

    @app.resource("native://note")
    async def note() -> str:
        return "native note"

    exposed, _ = map_tools("crm", [Tool(name="count", input_schema=SCHEMA)], app.capability_names(), max_tools=10)
    taken = app.capability_names() | {e.name for e in exposed}
    resources, _ = map_items(
        "crm", "resource", [Resource(uri="crm://accounts", name="accounts")], taken, (), max_items=9
    )
    templates, _ = map_items(
        "crm",
        "resource_template",
        [ResourceTemplate(uri_template="crm://account/{id}", name="account")],
        taken,
        (),
        max_items=9,
    )
    argument = PromptArgument(name="topic", required=True)
    prompts, _ = map_items("crm", "prompt", [Prompt(name="brief", arguments=[argument])], taken, (), max_items=9)
    app.replace_upstream(
        "crm",
        [upstream_tool_definition("crm", e, None) for e in exposed],
        [upstream_resource_definition("crm", e, None) for e in resources + templates],
        [upstream_prompt_definition("crm", e, None) for e in prompts],
    )
    store = SqliteTenantStore(tmp_path / "control.sqlite3")
    store.create_tenant("acme", tools=["native", "note", *UPSTREAM])
    store.create_tenant("globex", tools=["native", "note"])
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


async def test_an_upstream_resource_is_read_on_the_upstream_invoker_with_the_native_outcome(setup) -> None:
    dispatcher, sink, upstream = setup
    acme = caller("acme", {*UPSTREAM})
    assert [r.uri for r in dispatcher.list_resources(acme)] == ["upstream://crm/crm://accounts"]
    assert [t.uri_template for t in dispatcher.list_resource_templates(acme)] == ["upstream://crm/crm://account/{id}"]
    result = await dispatcher.read_resource(acme, "upstream://crm/crm://account/42")
    assert upstream.calls == [("crm__account", {"uri": "upstream://crm/crm://account/42"})]
    text, blob = result.contents
    assert text.uri == "upstream://crm/crm://account/42" and text.text == "crm://account/42 key=[redacted]"
    assert base64.b64decode(blob.blob) == b"raw [redacted]"  # inside the base64 too
    assert result.meta is None  # the upstream's _meta is not passed on
    done = [e for e in sink.events if e.event_type == "resource_read"]
    assert done[-1].detail == {"upstream": "crm", "upstream_resource": "account"} and done[-1].result_status == "ok"
    assert "42" not in str(done[-1].detail)  # the URI is an argument: hashed, never stored


@pytest.mark.parametrize(
    ("tenant", "tools", "uri"),
    [
        ("globex", {*UPSTREAM}, "upstream://crm/crm://accounts"),  # not granted to the tenant
        ("acme", {"native"}, "upstream://crm/crm://accounts"),  # not in the token
        ("acme", {*UPSTREAM}, "upstream://crm/crm://unlisted"),  # the upstream did not list it
        ("acme", {*UPSTREAM}, "upstream://other/crm://accounts"),  # another upstream's prefix
        ("acme", {*UPSTREAM}, "crm://accounts"),  # the upstream's own URI, unprefixed
        ("acme", {*UPSTREAM}, "upstream://nothing/at/all"),  # unknown
    ],
)
async def test_an_ungranted_or_unlisted_upstream_resource_is_refused_like_an_unknown_one(
    setup, tenant: str, tools: set[str], uri: str
) -> None:
    dispatcher, sink, upstream = setup
    with pytest.raises(ResourceNotFound) as refused:
        await dispatcher.read_resource(caller(tenant, tools), uri)
    assert refused.value.message == "Resource not found" and refused.value.data == {"uri": uri}
    assert upstream.calls == [] and sink.events[-1].event_type == "access_denied"
    # Positive control: the native resource is readable by the same tenant and token.
    assert (await dispatcher.read_resource(caller(tenant, tools | {"note"}), "native://note")).contents


async def test_an_upstream_prompt_is_rendered_on_the_upstream_invoker_and_redacted(setup) -> None:
    dispatcher, sink, upstream = setup
    acme = caller("acme", {*UPSTREAM})
    assert [(p.name, [a.name for a in p.arguments or []]) for p in dispatcher.list_prompts(acme)] == [
        ("crm__brief", ["topic"])
    ]
    result = await dispatcher.get_prompt(acme, "crm__brief", {"topic": "q3"})
    assert upstream.calls == [("crm__brief", {"topic": "q3"})]
    assert result.messages[0].content.text == "summarise q3 with [redacted]"
    done = [e for e in sink.events if e.event_type == "prompt_get"]
    assert done[-1].detail == {"upstream": "crm", "upstream_prompt": "brief"}


@pytest.mark.parametrize(
    ("tenant", "tools", "name", "arguments", "code"),
    [
        ("globex", {*UPSTREAM}, "crm__brief", {"topic": "q3"}, "not_found"),  # not granted
        ("acme", {"native"}, "crm__brief", {"topic": "q3"}, "not_found"),  # not in the token
        ("acme", {*UPSTREAM}, "crm__nothing", {"topic": "q3"}, "not_found"),  # unknown
        ("acme", {*UPSTREAM}, "crm__brief", {}, "invalid_arguments"),  # a required argument missing
        ("acme", {*UPSTREAM}, "crm__brief", {"topic": "q3", "extra": "x"}, "invalid_arguments"),  # undeclared
        ("acme", {*UPSTREAM}, "crm__brief", {"topic": 3}, "invalid_arguments"),  # prompt arguments are strings
    ],
)
async def test_upstream_prompts_are_admitted_like_native_ones(
    setup, tenant: str, tools: set[str], name: str, arguments: dict[str, Any], code: str
) -> None:
    dispatcher, _, upstream = setup
    with pytest.raises(tenantry.TenantryError) as refused:
        await dispatcher.get_prompt(caller(tenant, tools), name, arguments)
    assert refused.value.code == code and upstream.calls == []
    if code == "not_found":
        assert refused.value.message == f"Prompt not found: {name}"


def test_an_upstream_cannot_take_a_native_resource_uri_or_name(setup) -> None:
    dispatcher, _, _ = setup
    app = dispatcher.app
    clash = ResourceDefinition(
        name="crm__other", uri="native://note", fn=print, description="", mime_type="", context_param=None, tenants=None
    )
    with pytest.raises(UsageError, match="registered twice"):
        app.replace_upstream("evil", resources=[clash])
    named = ResourceDefinition(
        name="note", uri="upstream://evil/x", fn=print, description="", mime_type="", context_param=None, tenants=None
    )
    with pytest.raises(UsageError, match="registered twice"):
        app.replace_upstream("evil", resources=[named])
    assert "crm__other" not in app.resources and app.resources["note"].upstream is None
    app.replace_upstream("crm")  # positive control: an upstream's own set can be replaced (here: emptied)
    assert not [r for r in app.resources.values() if r.upstream == "crm"] and "crm__count" not in app.tools
