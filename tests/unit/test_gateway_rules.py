"""Gateway mode's pure rules: the naming rule, credential templates, upstream specs, the SSRF address check."""

from __future__ import annotations

import pytest
from mcp_types import Prompt, Resource, ResourceTemplate, Tool

from tenantry.core.errors import NotFound, UsageError
from tenantry.core.upstreams import (
    TemplateValues,
    UpstreamSpec,
    exposed_name,
    exposed_uri,
    original_uri,
    render_template,
    template_secrets,
)
from tenantry.gateway.errors import UpstreamUnavailable
from tenantry.gateway.naming import map_items, map_tools
from tenantry.gateway.transports import check_address

SCHEMA = {"type": "object", "properties": {"q": {"type": "string"}}}


def tool(name: str, schema: object = SCHEMA) -> Tool:
    return Tool.model_construct(name=name, input_schema=schema)


def test_exposed_names_are_the_upstream_and_the_tool_joined_by_a_double_underscore() -> None:
    assert exposed_name("crm", "search") == "crm__search"
    assert exposed_name("crm", "a__b") == "crm__a__b"  # the first __ always ends the upstream's name


def test_distinct_upstream_tool_pairs_never_share_an_exposed_name() -> None:
    pairs = [("a", "b__c"), ("a-b", "c"), ("a", "b-c"), ("ab", "c"), ("a", "bc"), ("a", "_b"), ("a-", "b")]
    names = [exposed_name(u, t) for u, t in pairs if not u.endswith("-")]
    assert len(names) == len(set(names))


def test_unexposable_tools_are_reported_with_their_reason() -> None:
    tools = [
        tool("search"),
        tool("x" * 125),
        tool("has space"),
        tool("search"),
        tool("whoami"),
        tool("bad_schema", {"type": 12}),
        tool("t1"),
        tool("t2"),
    ]
    exposed, skipped = map_tools("crm", tools, {"crm__whoami"}, max_tools=7)
    assert [e.name for e in exposed] == ["crm__search", "crm__t1"]
    assert {(s.upstream_tool, s.reason) for s in skipped} == {
        ("x" * 125, "name_too_long"),
        ("has space", "invalid_name"),
        ("search", "duplicate"),
        ("whoami", "collision"),
        ("bad_schema", "invalid_schema"),
        ("t2", "tool_limit"),
    }
    assert all(s.explanation for s in skipped)


def test_resource_uris_are_served_under_the_upstreams_name() -> None:
    assert exposed_uri("crm", "file:///a/b.txt") == "upstream://crm/file:///a/b.txt"
    assert original_uri("crm", "upstream://crm/file:///a/b.txt") == "file:///a/b.txt"
    assert original_uri("crm", exposed_uri("crm", "upstream://other/x")) == "upstream://other/x"  # nested, unchanged


@pytest.mark.parametrize(
    "uri",
    [
        "upstream://crm-evil/x",
        "upstream://crmx/x",
        "upstream://cr/m/x",
        "upstream://crm",
        "crm://x",
        "UPSTREAM://crm/x",
    ],
)
def test_an_exposed_uri_names_exactly_one_upstream(uri: str) -> None:
    assert original_uri("crm", uri) is None
    assert original_uri("crm", "upstream://crm/x") == "x"  # positive control


def test_distinct_upstream_uri_pairs_never_share_an_exposed_uri() -> None:
    pairs = [("a", "b/c"), ("a-b", "c"), ("a", "-b/c"), ("ab", "c"), ("a", "bc"), ("a", "/b/c")]
    uris = [exposed_uri(u, r) for u, r in pairs]
    assert len(uris) == len(set(uris))


def test_unexposable_resources_templates_and_prompts_are_reported_with_their_reason() -> None:
    resources = [
        Resource(uri="crm://a", name="accounts"),
        Resource(uri="crm://b", name="accounts"),  # the same name twice
        Resource(uri="crm://c", name="search"),  # the name of one of its tools
        Resource(uri="crm://d", name="Has Space"),
        Resource(uri="crm://e", name="y" * 126),
        Resource(uri="crm://" + "z" * 2100, name="long_uri"),
        Resource(uri="crm://a", name="again"),  # a URI it already listed
        Resource(uri="native://taken", name="clash"),
        Resource(uri="crm://f", name="contacts"),
        Resource(uri="crm://g", name="over"),
    ]
    exposed, skipped = map_items(
        "crm", "resource", resources, {"crm__search"}, {"upstream://crm/native://taken"}, max_items=9
    )
    assert [(e.name, e.uri) for e in exposed] == [
        ("crm__accounts", "upstream://crm/crm://a"),
        ("crm__contacts", "upstream://crm/crm://f"),
    ]
    assert {(s.upstream_tool, s.reason) for s in skipped} == {
        ("accounts", "duplicate"),
        ("search", "collision"),
        ("Has Space", "invalid_name"),
        ("y" * 126, "name_too_long"),
        ("long_uri", "uri_too_long"),
        ("again", "uri_collision"),
        ("clash", "uri_collision"),
        ("over", "item_limit"),
    }
    assert all(s.kind == "resource" and s.explanation for s in skipped)


def test_resource_templates_must_parse_once_prefixed() -> None:
    templates = [
        ResourceTemplate(uri_template="crm://x/{id}", name="ok"),
        ResourceTemplate(uri_template="crm://{a}{b}", name="bad"),
    ]
    exposed, skipped = map_items("crm", "resource_template", templates, set(), set(), max_items=10)
    assert [(e.name, e.template is not None and e.template.match("upstream://crm/crm://x/7")) for e in exposed] == [
        ("crm__ok", {"id": "7"})
    ]
    assert [(s.upstream_tool, s.reason, s.kind) for s in skipped] == [("bad", "invalid_uri", "resource_template")]


def test_prompts_share_the_namespace_of_tools_and_resources() -> None:
    prompts = [Prompt(name="brief"), Prompt(name="accounts")]
    exposed, skipped = map_items("crm", "prompt", prompts, {"crm__accounts"}, set(), max_items=10)
    assert [e.name for e in exposed] == ["crm__brief"] and exposed[0].uri is None
    assert [(s.upstream_tool, s.reason, s.kind) for s in skipped] == [("accounts", "collision", "prompt")]


def values(**secrets: str) -> TemplateValues:
    def secret(name: str) -> str:
        if name not in secrets:
            raise NotFound(f"no secret named {name!r}")
        return secrets[name]

    return TemplateValues(tenant_id="acme", tenant_dir="/data/tenants/acme/files", secret=secret)


def test_templates_take_the_tenants_own_secrets_id_and_directory() -> None:
    template = "Bearer {secret:token} for {tenant} in {tenant_dir} {{literal}}"
    assert template_secrets(template) == ["token"]
    assert render_template(template, values(token="s3cr3t")) == (
        "Bearer s3cr3t for acme in /data/tenants/acme/files {literal}"
    )


@pytest.mark.parametrize("template", ["{unknown}", "{secret}", "a { b", "{tenant_id}", "}"])
def test_malformed_templates_are_refused(template: str) -> None:
    with pytest.raises(UsageError):
        template_secrets(template)


def test_a_missing_secret_is_not_found() -> None:
    with pytest.raises(NotFound):
        render_template("{secret:absent}", values())


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (UpstreamSpec(name="Bad_Name", transport="http", url="https://x/mcp"), "upstream name"),
        (UpstreamSpec(name="x", transport="http", url="ftp://x/"), "http:// or https://"),
        (UpstreamSpec(name="x", transport="http", url="https://x/", headers=(("Host", "evil"),)), "set by the gateway"),
        (UpstreamSpec(name="x", transport="http", url="https://x/", headers=(("A", "b\r\nC: d"),)), "line breaks"),
        (
            UpstreamSpec(
                name="x", transport="http", url="https://x/", headers=(("A", "{secret:k}"),), tenant_agnostic=True
            ),
            "shared by all tenants",
        ),
        (UpstreamSpec(name="x", transport="stdio", command=("srv",), tenant_agnostic=True), "HTTP upstreams"),
        (UpstreamSpec(name="x", transport="stdio", command=("srv",), env=(("1X", "v"),)), "variable name"),
        (UpstreamSpec(name="x", transport="stdio", command=()), "--command"),
        (UpstreamSpec(name="x", transport="stdio", command=("srv",), call_timeout=0), "timeouts"),
    ],
)
def test_invalid_upstream_specs_are_refused(spec: UpstreamSpec, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        spec.validated()


def test_a_spec_survives_storage() -> None:
    spec = UpstreamSpec(
        name="fs", transport="stdio", command=("mcp-fs", "{tenant_dir}"), env=(("TOKEN", "{secret:t}"),), created_at=5
    ).validated()
    assert UpstreamSpec.from_json("fs", spec.to_json(), 5) == spec
    assert spec.credential_secrets() == ["t"]


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "::1",
        "fe80::1",
        "::ffff:127.0.0.1",
        "0.0.0.0",
        "100.64.0.1",
        "fd00::1",
        "2002:7f00:1::",  # 6to4 for 127.0.0.1
        "2002:a9fe:a9fe::1",  # 6to4 for 169.254.169.254
        "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo, client 127.0.0.1
        "fec0::1",  # site-local (deprecated, still routed inside some networks)
        "64:ff9b::a9fe:a9fe",  # NAT64 for 169.254.169.254
        "64:ff9b:1::7f00:1",  # local-use NAT64 for 127.0.0.1
        "198.18.0.1",  # benchmarking
        "240.0.0.1",  # reserved
        "2001:db8::1",  # documentation
    ],
)
def test_private_loopback_and_link_local_addresses_are_refused(address: str) -> None:
    with pytest.raises(UpstreamUnavailable, match="private, loopback or link-local"):
        check_address(address, allow_private=False)
    check_address(address, allow_private=True)  # the operator's explicit choice


@pytest.mark.parametrize(
    "address", ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946", "1.1.1.1", "64:ff9b::5db8:d822"]
)
def test_public_addresses_are_allowed(address: str) -> None:
    check_address(address, allow_private=False)


@pytest.mark.anyio
async def test_a_resource_or_prompt_listing_the_upstream_does_not_implement_lists_nothing() -> None:
    from mcp.shared.exceptions import MCPError
    from mcp_types import METHOD_NOT_FOUND

    from tenantry.gateway.gateway import _pages

    async def missing(params: object) -> object:
        raise MCPError(code=METHOD_NOT_FOUND, message="Method not found")

    async def broken(params: object) -> object:
        raise MCPError(code=-32603, message="boom")

    assert await _pages(missing, "resource_templates", 10, optional=True) == []
    with pytest.raises(MCPError):  # tools are not optional
        await _pages(missing, "tools", 10)
    with pytest.raises(MCPError):  # any other refusal fails the discovery, loudly
        await _pages(broken, "resources", 10, optional=True)
