"""Regressions for what an outside review found at the HTTP edge: forged client addresses, open
metrics, Host checks beyond /mcp, client-chosen session ids in sessionless audit records,
unbounded audit fields, tokens accepted after ``exp``, and an issuer that moved with the last
server started on a store."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.support import web
from tests.support.rpc import LegacySession, modern_call, post, request
from tests.support.server import RunningServer, run_cli, start_server

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def edge_server(tmp_path_factory: pytest.TempPathFactory):
    server = start_server(tmp_path_factory.mktemp("edge") / "data")
    yield server
    server.stop()


def records_of(server: RunningServer, tenant: str, subject: str) -> list[dict]:
    """The records of one test's calls: each test uses a subject of its own."""
    time.sleep(0.1)  # outcomes ride the next group commit (at most a few ms)
    return [r for r in server.audit_records(tenant) if r.get("subject") == subject and r.get("request_id")]


# -- client addresses ----------------------------------------------------------------------


def test_a_forwarded_for_header_from_an_untrusted_client_is_not_believed(edge_server: RunningServer) -> None:
    token = edge_server.token("acme", "xff-forger")
    response = modern_call(
        edge_server.mcp_url,
        token,
        "tools/call",
        {"name": "whoami", "arguments": {}},
        headers={"X-Forwarded-For": "203.0.113.9", "X-Real-IP": "203.0.113.9", "Forwarded": "for=203.0.113.9"},
    )
    assert response.status_code == 200
    recorded = records_of(edge_server, "acme", "xff-forger")
    assert recorded and {r["ip_address"] for r in recorded} == {"127.0.0.1"}


def test_a_configured_proxy_is_believed(tmp_path: Path) -> None:
    config = tmp_path / "tenantry.toml"
    config.write_text('[server]\ntrusted_proxies = ["127.0.0.1/32"]\n')
    server = start_server(tmp_path / "data", config=config)
    try:
        token = server.token("acme", "behind-proxy")
        response = modern_call(
            server.mcp_url,
            token,
            "tools/call",
            {"name": "whoami", "arguments": {}},
            headers={"X-Forwarded-For": "203.0.113.9"},
        )
        assert response.status_code == 200
        recorded = records_of(server, "acme", "behind-proxy")
        assert recorded and {r["ip_address"] for r in recorded} == {"203.0.113.9"}
    finally:
        server.stop()


def test_trusted_proxies_must_be_addresses() -> None:
    result = run_cli("serve", "--port", "1", env={"TENANTRY_SERVER__TRUSTED_PROXIES": '["*"]'}, check=False)
    assert result.returncode == 2 and "trusted_proxies" in result.stderr and "Traceback" not in result.stderr


# -- metrics and Host/Origin on every route --------------------------------------------------


def test_metrics_need_the_generated_token_by_default(edge_server: RunningServer) -> None:
    anonymous = web.get(edge_server.base_url + "/metrics")
    assert anonymous.status_code == 401 and "tenantry_" not in anonymous.text and "acme" not in anonymous.text
    wrong = web.get(edge_server.base_url + "/metrics", headers={"Authorization": "Bearer wrong"})
    assert wrong.status_code == 401
    token_file = edge_server.data_dir / "keys" / "metrics.token"
    assert token_file.stat().st_mode & 0o077 == 0
    scraped = web.get(
        edge_server.base_url + "/metrics", headers={"Authorization": f"Bearer {token_file.read_text().strip()}"}
    )
    assert scraped.status_code == 200 and "tenantry_" in scraped.text


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/.well-known/jwks.json", "/oauth/token", "/mcp/"])
def test_a_foreign_host_is_refused_on_every_route(edge_server: RunningServer, path: str) -> None:
    response = web.get(edge_server.base_url + path, headers={"Host": "attacker.example"})
    assert response.status_code == 421, (path, response.status_code)
    assert "location" not in response.headers
    control = web.get(edge_server.base_url + "/healthz")
    assert control.status_code == 200


def test_a_trailing_slash_is_not_redirected_anywhere(edge_server: RunningServer) -> None:
    response = web.get(edge_server.base_url + "/mcp/", follow_redirects=False)
    assert response.status_code == 404 and "location" not in response.headers


def test_a_foreign_origin_is_refused_beyond_mcp_but_discovery_stays_readable(edge_server: RunningServer) -> None:
    evil = {"Origin": "https://attacker.example"}
    assert web.post(edge_server.base_url + "/oauth/token", headers=evil, data={}).status_code == 403
    assert web.get(edge_server.base_url + "/healthz", headers=evil).status_code == 403
    public = web.get(edge_server.base_url + "/.well-known/oauth-protected-resource", headers=evil)
    assert public.status_code == 200  # a public, credential-free document


# -- audit fields come from verified facts, bounded ----------------------------------------


def test_a_sessionless_call_cannot_choose_its_audited_session_id(edge_server: RunningServer) -> None:
    token = edge_server.token("acme", "session-chooser")
    response = modern_call(
        edge_server.mcp_url,
        token,
        "tools/call",
        {"name": "whoami", "arguments": {}},
        headers={"Mcp-Session-Id": "chosen-by-the-client"},
    )
    assert response.status_code == 200
    assert response.json()["result"]["structuredContent"]["session_id"] is None
    recorded = records_of(edge_server, "acme", "session-chooser")
    assert recorded and all(r["session_id"].startswith("jti:") for r in recorded)
    # positive control: a real handshake-era session is recorded as itself
    legacy = LegacySession(edge_server.mcp_url, edge_server.token("acme", "session-holder"))
    called = legacy.call("tools/call", {"name": "whoami", "arguments": {}})
    assert called.status_code == 200
    calls = [r for r in records_of(edge_server, "acme", "session-holder") if r["event_type"] != "connection_opened"]
    assert calls and {r["session_id"] for r in calls} == {legacy.session_id}


def test_a_refused_request_cannot_grow_its_audit_record(edge_server: RunningServer) -> None:
    huge = "x" * 4_000  # each; the HTTP parser caps all headers together at 16 KiB
    response = post(
        edge_server.mcp_url,
        request("tools/list"),
        headers={"Mcp-Session-Id": huge, "Authorization": "Bearer " + huge, "User-Agent": huge},
    )
    assert response.status_code == 401
    rejected = [
        r for r in edge_server.audit_records("_system") if r.get("request_id") == response.headers["x-request-id"]
    ]
    assert rejected and len(json.dumps(rejected[0])) < 2_000
    assert huge[:1000] not in json.dumps(rejected[0])


def test_a_denied_tool_name_is_stored_bounded_and_on_one_line(edge_server: RunningServer) -> None:
    token = edge_server.token("acme", "name-inventor")
    name = "evil\n2026-01-01T00:00:00Z  globex#1  tool_call  ok\x1b[2J" + "y" * 200_000
    session = LegacySession(edge_server.mcp_url, token)  # a handshake-era call: no Mcp-Name header
    response = session.call("tools/call", {"name": name, "arguments": {}})
    assert response.status_code == 200 and "error" in response.json()
    assert len(response.text) < 4_000  # the error does not echo it back either
    denied = [r for r in records_of(edge_server, "acme", "name-inventor") if r["event_type"] == "tool_denied"]
    assert denied and len(denied[0]["tool_name"]) < 300
    assert "\n" not in denied[0]["tool_name"] and "\x1b" not in denied[0]["tool_name"]
    assert "sha256:" in denied[0]["tool_name"]  # two different long names stay distinguishable


def test_unauthenticated_floods_write_a_bounded_number_of_records(tmp_path: Path) -> None:
    # Refusals answered at once (not held past a few per minute), so the flood fits in one minute.
    server = start_server(tmp_path / "data", env={"TENANTRY_AUTH__FAILED_ATTEMPTS": "100000/minute"})
    try:
        before = len(server.audit_records("_system"))
        with web.Client() as client:
            for _ in range(150):
                client.post(server.mcp_url, json=request("tools/list"), headers={"Accept": "application/json"})
        written = len(server.audit_records("_system")) - before
        assert 10 <= written <= 40, written  # the first refusals one by one, then counted
        # positive control: a real tenant is still served and audited
        token = server.token("acme", "alice")
        assert modern_call(server.mcp_url, token, "tools/call", {"name": "whoami", "arguments": {}}).status_code == 200
    finally:
        server.stop()


# -- tokens --------------------------------------------------------------------------------


def test_our_own_token_is_refused_the_moment_it_expires(edge_server: RunningServer) -> None:
    token = edge_server.token("acme", "alice", ttl="2s")
    params = {"name": "whoami", "arguments": {}}
    assert "result" in modern_call(edge_server.mcp_url, token, "tools/call", params).json()  # positive control
    time.sleep(3.1)
    late = modern_call(edge_server.mcp_url, token, "tools/call", params)
    assert late.status_code == 401 and "expired" in late.json()["error"]["message"]


def test_a_second_server_on_the_store_does_not_move_the_issuer(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = start_server(data)
    second = start_server(data)  # another port, same store
    try:
        for server in (first, second):
            token = server.token("acme", "alice")  # issued after both started
            for target in (first, second):
                called = modern_call(target.mcp_url, token, "tools/call", {"name": "whoami", "arguments": {}})
                assert called.status_code == 200 and "result" in called.json(), called.text
    finally:
        second.stop()
        first.stop()


# -- a store is never created by accident --------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["tenant", "list"],
        ["tenant", "create", "acme"],
        ["token", "issue", "--tenant", "acme", "--sub", "a"],
        ["audit", "tail"],
        ["keys", "list"],
        ["secret", "list", "--tenant", "acme"],
    ],
)
def test_commands_refuse_a_data_dir_without_a_store(tmp_path: Path, args: list[str]) -> None:
    missing = tmp_path / "typo"
    result = run_cli(*args, data_dir=missing, check=False)
    assert result.returncode == 1 and str(missing) in result.stderr and "tenantry serve" in result.stderr
    assert not missing.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_cli(*args, data_dir=empty, check=False)
    assert result.returncode == 1 and "no Tenantry store" in result.stderr
    assert list(empty.iterdir()) == []
