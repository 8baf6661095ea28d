"""A session belongs to the full principal that opened it: (issuer, tenant, subject)."""

from __future__ import annotations

import httpx2

from tests.support import web
from tests.support.rpc import ACCEPT, HANDSHAKE_VERSION, LegacySession, post, request
from tests.support.server import RunningServer


def whoami(session: LegacySession, token: str | None = None) -> httpx2.Response:
    return session.call("tools/call", {"name": "whoami", "arguments": {}}, token=token)


def test_owner_can_use_its_session_positive_control(server: RunningServer, acme_token: str) -> None:
    session = LegacySession(server.mcp_url, acme_token)
    response = whoami(session)
    assert response.status_code == 200
    result = response.json()["result"]["structuredContent"]
    assert (result["tenant_id"], result["subject"], result["session_id"]) == ("acme", "alice", session.session_id)


def test_same_subject_of_another_tenant_cannot_use_the_session(
    server: RunningServer, acme_token: str, globex_token: str
) -> None:
    session = LegacySession(server.mcp_url, acme_token)
    hijack = whoami(session, token=globex_token)  # globex's "alice" presents acme's "alice" session id
    assert hijack.status_code == 404
    assert hijack.json()["error"]["data"]["code"] == "session_not_found"
    assert "acme" not in hijack.text
    assert whoami(session).status_code == 200  # the owner is unaffected
    for tenant in ("acme", "globex"):  # recorded in both tenants' streams
        events = server.audit_records(tenant)
        assert any(
            e["event_type"] == "session_hijack_attempt" and e["session_id"] == session.session_id for e in events
        )


def test_another_subject_of_the_same_tenant_cannot_use_the_session(server: RunningServer, acme_token: str) -> None:
    session = LegacySession(server.mcp_url, acme_token)
    bob = server.token("acme", "bob")
    assert whoami(session, token=bob).status_code == 404


def test_a_fresh_token_of_the_same_principal_may_continue_the_session(server: RunningServer, acme_token: str) -> None:
    session = LegacySession(server.mcp_url, acme_token)
    refreshed = server.token("acme", "alice")
    assert refreshed != acme_token
    assert whoami(session, token=refreshed).status_code == 200


def test_a_session_id_alone_never_authenticates(server: RunningServer, acme_token: str) -> None:
    session = LegacySession(server.mcp_url, acme_token)
    response = web.post(
        server.mcp_url,
        json=request("tools/call", {"name": "whoami", "arguments": {}}),
        headers={"Accept": ACCEPT, "Content-Type": "application/json", **session.headers()},
    )
    assert response.status_code == 401
    assert "acme-canary" not in response.text


def test_hijacker_cannot_close_the_session(server: RunningServer, acme_token: str, globex_token: str) -> None:
    session = LegacySession(server.mcp_url, acme_token)
    response = web.delete(server.mcp_url, headers={"Authorization": f"Bearer {globex_token}", **session.headers()})
    assert response.status_code == 404
    assert whoami(session).status_code == 200


def test_unknown_session_id_is_not_found(server: RunningServer, acme_token: str) -> None:
    response = post(
        server.mcp_url,
        request("tools/list"),
        token=acme_token,
        headers={"Mcp-Session-Id": "0" * 32, "MCP-Protocol-Version": HANDSHAKE_VERSION},
    )
    assert response.status_code == 404


def test_owner_can_close_its_session(server: RunningServer, acme_token: str) -> None:
    session = LegacySession(server.mcp_url, acme_token)
    closed = web.delete(server.mcp_url, headers={"Authorization": f"Bearer {acme_token}", **session.headers()})
    assert closed.status_code in (200, 204)
    assert whoami(session).status_code == 404
