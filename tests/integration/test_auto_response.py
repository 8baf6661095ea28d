"""Automatic response: the server revokes a credential or halts a tenant by itself when the
anomaly detector flags it, audits what it did, and touches nothing else."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.support.rpc import LegacySession, modern_call
from tests.support.server import RunningServer, start_server
from tests.support.timing import first_change

WHOAMI = {"name": "whoami", "arguments": {}}
FOREIGN_TOOL = {"name": "globex_forecast", "arguments": {"quarter": "Q1"}}
TRAVERSAL = {"name": "read_file", "arguments": {"path": "../globex/files/reports/q3.txt"}}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("response")
    config = root / "tenantry.toml"
    config.write_text(
        "[alerts]\ndenial_burst = 5\ndenial_window = 60\n\n"
        '[response]\ncross_tenant_attempt = "revoke_token"\ndenial_burst = "halt_tenant"\n'
    )
    running = start_server(root / "data", config=config)
    yield running
    running.stop()


def test_a_cross_tenant_attempt_revokes_the_token_that_made_it(server: RunningServer) -> None:
    attacker = server.token("acme", "curious-agent")
    colleague = server.token("acme", "curious-agent")  # same subject, another token
    session = LegacySession(server.mcp_url, attacker)
    assert session.call("tools/call", WHOAMI).status_code == 200
    # A refused name that exists for another tenant triggers no action (that would be an oracle)...
    probe = session.call("tools/call", FOREIGN_TOOL)
    assert probe.json()["error"]["data"]["code"] == "tool_unavailable"
    time.sleep(1.0)
    assert session.call("tools/call", WHOAMI).status_code == 200
    # ...an attempt on another tenant's files does.
    session.call("tools/call", TRAVERSAL)
    response, _ = first_change(lambda: session.call("tools/call", WHOAMI), lambda r: r.status_code != 200, within=2)
    assert response.status_code == 401 and "revoked" in response.text
    assert modern_call(server.mcp_url, colleague, "tools/call", WHOAMI).status_code == 200
    assert modern_call(server.mcp_url, server.token("globex", "g"), "tools/call", WHOAMI).status_code == 200
    revocations = [r for r in server.audit_records("acme") if r["event_type"] == "token_revoked"]
    assert len(revocations) == 1
    assert revocations[0]["actor"] == "tenantry:auto-response"
    assert revocations[0]["reason"].startswith("automatic response to cross_tenant_attempt")
    assert revocations[0]["subject"] == "curious-agent"


def test_an_api_key_caught_crossing_tenants_is_revoked(server: RunningServer) -> None:
    server.cli("tenant", "create", "resp-keys", "--tools", "whoami,query_crm,read_file")
    key = server.cli("apikey", "create", "--tenant", "resp-keys").stdout.strip()
    assert modern_call(server.mcp_url, key, "tools/call", WHOAMI).status_code == 200
    modern_call(server.mcp_url, key, "tools/call", TRAVERSAL)
    response, _ = first_change(
        lambda: modern_call(server.mcp_url, key, "tools/call", WHOAMI), lambda r: r.status_code != 200, within=2
    )
    assert response.status_code == 401 and "revoked" in response.text
    key_id = key.split("_")[2]
    assert '"revoked"' in server.cli("apikey", "list", "--tenant", "resp-keys", "--json").stdout
    events = [r for r in server.audit_records("resp-keys") if r["event_type"] == "api_key_revoked"]
    assert [(e["actor"], e["detail"]["key_id"]) for e in events] == [("tenantry:auto-response", key_id)]


def test_a_denial_burst_halts_the_tenant_and_no_other(server: RunningServer) -> None:
    server.cli("tenant", "create", "resp-burst", "--tools", "whoami")
    token = server.token("resp-burst", "noisy", tools="whoami")
    bystander = server.token("globex", "quiet")
    for _ in range(5):
        denied = modern_call(server.mcp_url, token, "tools/call", {"name": "query_crm", "arguments": {}})
        assert denied.json()["error"]["data"]["code"] == "tool_unavailable", denied.text
    response, _ = first_change(
        lambda: modern_call(server.mcp_url, token, "tools/call", WHOAMI), lambda r: r.status_code != 200, within=2
    )
    assert response.status_code == 403 and response.json()["error"]["data"]["code"] == "tenant_halted"
    assert modern_call(server.mcp_url, bystander, "tools/call", WHOAMI).status_code == 200
    shown = server.cli("tenant", "show", "resp-burst", "--json").stdout
    assert '"halted"' in shown and "automatic response to denial_burst" in shown
    halts = [r for r in server.audit_records("resp-burst") if r["event_type"] == "tenant_halted"]
    assert len(halts) == 1 and halts[0]["actor"] == "tenantry:auto-response"
    server.cli("tenant", "resume", "resp-burst", "--reason", "reviewed")
    time.sleep(0.5)
    assert modern_call(server.mcp_url, server.token("resp-burst", "noisy"), "tools/call", WHOAMI).status_code == 200
