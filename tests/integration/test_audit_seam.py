"""Every decision reaches the tenant's audit stream with hashes only — never raw arguments."""

from __future__ import annotations

import hashlib
import json

import pytest
import rfc8785
from mcp.shared.exceptions import MCPError

from tests.support.mcp_clients import mcp_client
from tests.support.server import RunningServer

pytestmark = pytest.mark.anyio

SECRET_ARGUMENT = "raw-argument-canary-7f3a"


async def test_decisions_are_audited_with_hashes_only(server: RunningServer) -> None:
    token = server.token("acme", "auditor-test")
    async with mcp_client(server.mcp_url, token, "legacy") as client:
        await client.call_tool("query_crm", {"filter": SECRET_ARGUMENT})
        with pytest.raises(MCPError):
            await client.call_tool("globex_forecast", {"quarter": SECRET_ARGUMENT})
    mine = [r for r in server.audit_records("acme") if r.get("subject") == "auditor-test"]
    kinds = [(r["event_type"], r.get("tool_name"), r["result_status"]) for r in mine]
    assert ("token_issued", None, "ok") in kinds
    assert ("connection_opened", None, "ok") in kinds
    assert ("tool_call", "query_crm", "ok") in kinds
    assert ("tool_denied", "globex_forecast", "denied") in kinds
    call = next(r for r in mine if r["event_type"] == "tool_call")
    expected = "sha256:" + hashlib.sha256(rfc8785.dumps({"filter": SECRET_ARGUMENT})).hexdigest()
    assert call["args_hash"] == expected
    assert call["tenant_id"] == "acme" and call["session_id"] and call["request_id"] and call["ip_address"]
    assert isinstance(call["latency_ms"], int | float)
    store_bytes = b"".join(path.read_bytes() for path in server.data_dir.glob("audit.sqlite3*"))
    for place in (server.logs(), json.dumps(server.audit_records()), store_bytes.decode("latin-1")):
        assert SECRET_ARGUMENT not in place
        assert token not in place
