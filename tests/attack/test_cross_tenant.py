"""Tenant A must never reach tenant B's tools or data, in either protocol era."""

from __future__ import annotations

import pytest
from mcp.shared.exceptions import MCPError

from tests.support.mcp_clients import ERAS, Era, mcp_client
from tests.support.rpc import modern_call
from tests.support.server import RunningServer

pytestmark = pytest.mark.anyio

ACME_TOOLS = ["list_files", "query_crm", "read_file", "search_docs", "send_email", "whoami", "write_file"]
GLOBEX_TOOLS = ["globex_forecast", "list_files", "query_crm", "read_file", "whoami"]


@pytest.mark.parametrize("era", ERAS)
async def test_each_tenant_lists_exactly_its_own_tools(
    server: RunningServer, acme_token: str, globex_token: str, era: Era
) -> None:
    async with mcp_client(server.mcp_url, acme_token, era) as client:
        assert sorted(t.name for t in (await client.list_tools()).tools) == ACME_TOOLS
    async with mcp_client(server.mcp_url, globex_token, era) as client:
        assert sorted(t.name for t in (await client.list_tools()).tools) == GLOBEX_TOOLS


@pytest.mark.parametrize("era", ERAS)
async def test_another_tenants_tool_is_refused_like_a_tool_that_does_not_exist(
    server: RunningServer, acme_token: str, globex_token: str, era: Era
) -> None:
    async with mcp_client(server.mcp_url, acme_token, era) as client:
        with pytest.raises(MCPError) as foreign:
            await client.call_tool("globex_forecast", {"quarter": "Q1"})
        with pytest.raises(MCPError) as missing:
            await client.call_tool("no_such_tool_xyz", {"quarter": "Q1"})
    assert foreign.value.code == missing.value.code
    assert foreign.value.data["code"] == missing.value.data["code"] == "tool_unavailable"
    assert foreign.value.message.replace("globex_forecast", "X") == missing.value.message.replace(
        "no_such_tool_xyz", "X"
    )
    assert "globex" not in str(foreign.value.data).replace("globex_forecast", "")
    # positive control: the owner can call it
    async with mcp_client(server.mcp_url, globex_token, era) as client:
        result = await client.call_tool("globex_forecast", {"quarter": "Q1"})
        assert result.structured_content["revenue"] == 1_200_000


@pytest.mark.parametrize("era", ERAS)
async def test_a_tool_not_granted_never_runs(server: RunningServer, globex_token: str, era: Era) -> None:
    path = f"planted-{era}.txt"
    async with mcp_client(server.mcp_url, globex_token, era) as client:
        with pytest.raises(MCPError) as refused:
            await client.call_tool("write_file", {"path": path, "content": "should never exist"})
        assert refused.value.data["code"] == "tool_unavailable"
        listing = await client.call_tool("list_files", {})
        assert path not in str(listing.structured_content)


@pytest.mark.parametrize("era", ERAS)
async def test_crm_queries_see_only_the_callers_rows(server: RunningServer, acme_token: str, era: Era) -> None:
    async with mcp_client(server.mcp_url, acme_token, era) as client:
        result = await client.call_tool("query_crm", {"filter": ""})
        text = str(result.structured_content)
        assert "acme-canary" in text  # positive control
        assert "globex" not in text


@pytest.mark.parametrize(
    "injection",
    [
        "%' OR 1=1 --",
        "' UNION SELECT name, email FROM customers --",
        "x'; ATTACH DATABASE '../globex/data.sqlite3' AS g; --",
        "globex-canary",
        "%globex%",
        "') OR ('1'='1",
    ],
)
async def test_sql_injection_through_the_filter_reaches_nothing_of_another_tenant(
    server: RunningServer, acme_token: str, injection: str
) -> None:
    async with mcp_client(server.mcp_url, acme_token) as client:
        result = await client.call_tool("query_crm", {"filter": injection})
        assert "globex" not in str(result.structured_content) + str(result.content)


@pytest.mark.parametrize("era", ERAS)
@pytest.mark.parametrize("prefix", ["globex", "globex/", "globex-canary", "tenants/globex", "acme-evil"])
async def test_another_tenants_prefix_gives_zero_results(
    server: RunningServer, acme_token: str, era: Era, prefix: str
) -> None:
    async with mcp_client(server.mcp_url, acme_token, era) as client:
        result = await client.call_tool("list_files", {"prefix": prefix})
        assert result.structured_content == {"result": []}
        control = await client.call_tool("list_files", {})
        assert "README.md" in str(control.structured_content)


@pytest.mark.parametrize(
    "path",
    [
        "../globex/files/README.md",
        "../../globex/files/README.md",
        "reports/../../globex/files/README.md",
        "/etc/passwd",
        "%2e%2e/globex/files/README.md",
        "..%2fglobex%2ffiles%2fREADME.md",
        "%252e%252e%252fglobex",
        "..\\globex\\files\\README.md",
        "README.md\u0000",
        "\uff0e\uff0e/globex/files/README.md",
        "C:/globex/README.md",
    ],
)
async def test_path_traversal_variants_are_refused_before_the_tool_runs(
    server: RunningServer, acme_token: str, path: str
) -> None:
    async with mcp_client(server.mcp_url, acme_token) as client:
        for tool in ("read_file", "list_files"):
            arguments = {"path": path} if tool == "read_file" else {"prefix": path}
            with pytest.raises(MCPError) as refused:
                await client.call_tool(tool, arguments)
            assert refused.value.data["code"] == "scope_violation"
            assert "globex-canary" not in str(refused.value)


async def test_a_prefixed_token_is_confined_to_its_prefix(server: RunningServer) -> None:
    token = server.token("acme", "reporter", prefix="reports")
    async with mcp_client(server.mcp_url, token) as client:
        listing = await client.call_tool("list_files", {})
        assert [f["path"] for f in listing.structured_content["result"]] == ["reports/q3.txt"]
        assert "acme-canary" in (await client.call_tool("read_file", {"path": "reports/q3.txt"})).content[0].text
        for outside in ("README.md", "reports-evil/x.txt", "reportsx/q3.txt"):
            with pytest.raises(MCPError) as refused:
                await client.call_tool("read_file", {"path": outside})
            assert refused.value.data["code"] == "scope_violation"


@pytest.mark.parametrize("era", ERAS)
async def test_tenant_id_in_the_request_never_changes_the_tenant(
    server: RunningServer, acme_token: str, era: Era
) -> None:
    spoof = {"X-Tenant-Id": "globex", "Tenant-Id": "globex", "X-Forwarded-User": "globex", "X-Org-Id": "globex"}
    async with mcp_client(server.mcp_url, acme_token, era, headers=spoof) as client:
        result = await client.call_tool("whoami", {}, meta={"tenant_id": "globex", "tenantId": "globex"})
        assert result.structured_content["tenant_id"] == "acme"
        with pytest.raises(MCPError) as refused:
            await client.call_tool("whoami", {"tenant_id": "globex"})
        assert refused.value.data["code"] == "invalid_arguments"
        tools = await client.list_tools()
        assert "globex_forecast" not in {t.name for t in tools.tools}


def test_tenant_id_in_raw_params_is_ignored(server: RunningServer, acme_token: str) -> None:
    response = modern_call(
        server.mcp_url,
        acme_token,
        "tools/call",
        {"name": "whoami", "arguments": {}, "tenant_id": "globex", "_meta": {"tenant_id": "globex"}},
        headers={"Mcp-Method": "tools/call", "Mcp-Name": "whoami", "X-Tenant-Id": "globex"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["result"]["structuredContent"]["tenant_id"] == "acme"


async def test_logs_carry_no_data_canaries_and_no_tokens(
    server: RunningServer, acme_token: str, globex_token: str
) -> None:
    async with mcp_client(server.mcp_url, acme_token) as client:
        assert "acme-canary" in str((await client.call_tool("query_crm", {})).structured_content)
        assert "acme-canary" in (await client.call_tool("read_file", {"path": "README.md"})).content[0].text
    async with mcp_client(server.mcp_url, globex_token) as client:
        assert "globex-canary" in str((await client.call_tool("globex_forecast", {"quarter": "Q1"})).structured_content)
    logs = server.logs()
    for secret in ("acme-canary", "globex-canary", acme_token, globex_token, acme_token.split(".")[2]):
        assert secret not in logs
