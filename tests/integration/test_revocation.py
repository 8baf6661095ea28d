"""Revocation over real HTTP: by jti, by subject, for a whole tenant; on live sessions, in both
protocol eras, within a second of the CLI command, audited, and never touching anyone else."""

from __future__ import annotations

import base64
import json
import time

import anyio
import httpx2
import pytest
from mcp.shared.exceptions import MCPError

from tests.support.mcp_clients import mcp_client
from tests.support.rpc import LegacySession, modern_call
from tests.support.server import RunningServer
from tests.support.timing import first_change

WHOAMI = {"name": "whoami", "arguments": {}}


def jti_of(token: str) -> str:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["jti"]


def refused(response: httpx2.Response) -> bool:
    return response.status_code != 200


def assert_revoked(response: httpx2.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.json()["error"]["data"]["code"] == "invalid_credential"
    assert "revoked" in response.json()["error"]["message"]
    assert response.headers["www-authenticate"].startswith('Bearer error="invalid_token"')


def next_second() -> None:
    """Tenant- and subject-wide revocations cover tokens issued in their own second."""
    time.sleep(1.05 - (time.time() % 1))


def test_a_revoked_jti_is_refused_on_its_live_session_within_a_second(server: RunningServer) -> None:
    token = server.token("acme", "rev-jti")
    sibling = server.token("acme", "rev-jti")
    session = LegacySession(server.mcp_url, token)
    assert session.call("tools/call", WHOAMI).status_code == 200
    server.cli("token", "revoke", "--jti", jti_of(token), "--reason", "laptop stolen")
    response, elapsed = first_change(lambda: session.call("tools/call", WHOAMI), refused, within=2.0)
    assert_revoked(response)
    assert elapsed < 1.0
    # Another token of the same subject is not affected, nor a sessionless request with it.
    assert modern_call(server.mcp_url, sibling, "tools/call", WHOAMI).status_code == 200
    assert_revoked(modern_call(server.mcp_url, token, "tools/call", WHOAMI))


def test_revoking_a_subject_leaves_its_namesake_in_another_tenant_alone(server: RunningServer) -> None:
    acme_alice = server.token("acme", "rev-sub")
    globex_alice = server.token("globex", "rev-sub")
    acme_bob = server.token("acme", "rev-sub-bob")
    server.cli("token", "revoke", "--tenant", "acme", "--sub", "rev-sub")
    response, _ = first_change(
        lambda: modern_call(server.mcp_url, acme_alice, "tools/call", WHOAMI), refused, within=2.0
    )
    assert_revoked(response)
    assert modern_call(server.mcp_url, globex_alice, "tools/call", WHOAMI).status_code == 200
    assert modern_call(server.mcp_url, acme_bob, "tools/call", WHOAMI).status_code == 200
    next_second()
    fresh = server.token("acme", "rev-sub")
    assert modern_call(server.mcp_url, fresh, "tools/call", WHOAMI).status_code == 200


def test_revoking_a_tenant_refuses_all_its_tokens_and_no_one_elses(server: RunningServer) -> None:
    server.cli("tenant", "create", "rev-corp", "--tools", "whoami")
    tokens = [server.token("rev-corp", f"agent-{i}") for i in range(3)]
    other = server.token("globex", "rev-tenant-bystander")
    sessions = [LegacySession(server.mcp_url, t) for t in tokens]
    server.cli("token", "revoke", "--tenant", "rev-corp", "--reason", "breach")
    first_change(lambda: sessions[0].call("tools/call", WHOAMI), refused, within=2.0)
    for session in sessions:
        assert_revoked(session.call("tools/call", WHOAMI))
    assert modern_call(server.mcp_url, other, "tools/call", WHOAMI).status_code == 200
    next_second()
    assert modern_call(server.mcp_url, server.token("rev-corp", "agent-0"), "tools/call", WHOAMI).status_code == 200


@pytest.mark.anyio
async def test_the_sdk_client_sees_a_clear_error_after_revocation(server: RunningServer) -> None:
    token = server.token("acme", "rev-sdk")
    async with mcp_client(server.mcp_url, token, "legacy") as client:
        assert (await client.call_tool("whoami", {})).structured_content["subject"] == "rev-sdk"
        server.cli("token", "revoke", "--jti", jti_of(token))
        deadline = time.monotonic() + 2
        with pytest.raises(MCPError, match="token revoked"):
            while time.monotonic() < deadline:
                await client.call_tool("whoami", {})
                await anyio.sleep(0.05)


def test_revocations_are_audited_with_who_and_why(server: RunningServer) -> None:
    token = server.token("acme", "rev-audit")
    server.cli("token", "revoke", "--jti", jti_of(token), "--tenant", "acme", "--reason", "rotation drill")
    records = [r for r in server.audit_records("acme") if r["event_type"] == "token_revoked"]
    mine = [r for r in records if r["detail"].get("jti") == jti_of(token)]
    assert len(mine) == 1
    assert mine[0]["actor"].startswith("cli:") and mine[0]["reason"] == "rotation drill"
    assert token not in json.dumps(server.audit_records())  # the token itself is never recorded


@pytest.mark.parametrize(
    "args",
    [
        ["token", "revoke"],
        ["token", "revoke", "--sub", "alice"],
        ["token", "revoke", "--jti", "x", "--sub", "alice"],
        ["token", "revoke", "--tenant", "no-such-tenant"],
    ],
)
def test_bad_revoke_commands_are_one_clear_line(server: RunningServer, args: list[str]) -> None:
    result = server.cli(*args, check=False)
    assert result.returncode in (1, 2)
    assert "Traceback" not in result.stderr and result.stderr.strip()
