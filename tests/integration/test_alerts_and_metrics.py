"""Anomaly alerts reach the audit stream and a signed webhook; metrics carry the tenant."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.support import web
from tests.support.rpc import modern_call
from tests.support.server import RunningServer, start_server

SECRET = "webhook-secret-for-tests"


class Receiver:
    def __init__(self, fail_first: int = 0) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.fail_first = fail_first
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if receiver.fail_first > 0:
                    receiver.fail_first -= 1
                    self.send_response(503)
                    self.end_headers()
                    return
                receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return None

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/alerts"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def wait_for(self, predicate, timeout: float = 15.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            bodies = [json.loads(body) for _, body in self.received]
            if predicate(bodies):
                return bodies
            time.sleep(0.1)
        raise AssertionError(f"webhook not received in time: {self.received}")

    def close(self) -> None:
        self.httpd.shutdown()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver(fail_first=1)  # the first delivery fails: the notifier must retry
    yield running
    running.close()


@pytest.fixture
def alerting_server(receiver: Receiver, tmp_path: Path) -> Iterator[RunningServer]:
    server = start_server(
        tmp_path / "data",
        env={
            "TENANTRY_ALERTS__WEBHOOK_URL": receiver.url,
            "TENANTRY_ALERTS__WEBHOOK_SECRET": SECRET,
            "TENANTRY_ALERTS__DENIAL_BURST": "3",
            "TENANTRY_METRICS__TOKEN": "metrics-token",
        },
    )
    yield server
    server.stop()


def call(server: RunningServer, token: str, tool: str, arguments: dict) -> dict:
    return modern_call(server.mcp_url, token, "tools/call", {"name": tool, "arguments": arguments}).json()


def test_cross_tenant_attempts_and_denial_bursts_raise_signed_alerts(
    alerting_server: RunningServer, receiver: Receiver
) -> None:
    token = alerting_server.token("acme", "mallory")
    assert call(alerting_server, token, "whoami", {})["result"]  # positive control
    assert "error" in call(alerting_server, token, "globex_forecast", {"quarter": "Q1"})
    for path in ("../globex/files/README.md", "/etc/passwd"):
        assert "error" in call(alerting_server, token, "read_file", {"path": path})
    bodies = receiver.wait_for(lambda b: {"cross_tenant_attempt", "denial_burst"} <= {x["kind"] for x in b})
    for headers, body in receiver.received:
        timestamp = headers["x-tenantry-timestamp"]
        expected = "sha256=" + hmac.new(SECRET.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers["x-tenantry-signature"], expected)
        assert b"globex-canary" not in body
    assert {b["tenant_id"] for b in bodies} == {"acme"}
    stream = alerting_server.audit_records("acme")
    assert {"cross_tenant_attempt", "denial_burst"} <= {
        r["reason"].split(":")[0] for r in stream if r["event_type"] == "anomaly_alert"
    }
    assert not [r for r in alerting_server.audit_records("globex") if r["event_type"] == "anomaly_alert"]
    assert '"alert":"denial_burst"' in alerting_server.logs()


def test_a_path_naming_another_tenant_is_flagged_even_when_allowed(
    alerting_server: RunningServer, receiver: Receiver
) -> None:
    token = alerting_server.token("acme", "curious")
    assert call(alerting_server, token, "list_files", {"prefix": "globex"})["result"]["structuredContent"] == {
        "result": []
    }
    bodies = receiver.wait_for(lambda b: any(x["kind"] == "cross_tenant_attempt" for x in b))
    assert any("naming another tenant" in x["message"] for x in bodies)


def test_metrics_are_labelled_by_tenant_and_need_the_token(alerting_server: RunningServer) -> None:
    for tenant in ("acme", "globex"):
        token = alerting_server.token(tenant, "metrics")
        assert call(alerting_server, token, "whoami", {})["result"]
        assert "error" in call(alerting_server, token, "no_such_tool", {})
    assert web.get(alerting_server.base_url + "/metrics").status_code == 401
    text = web.get(alerting_server.base_url + "/metrics", headers={"Authorization": "Bearer metrics-token"}).text
    for tenant in ("acme", "globex"):
        assert f'tenantry_tool_calls_total{{status="ok",tenant="{tenant}",tool="whoami"}} 1.0' in text
        assert f'tenantry_denials_total{{reason="not_registered",tenant="{tenant}"}} 1.0' in text
        assert f'tenantry_tool_call_duration_seconds_count{{tenant="{tenant}"}} 1.0' in text
    assert "tenantry_audit_available 1.0" in text
    assert "tenantry_fair_share_waiting 0.0" in text  # sequential calls never wait their turn
    assert "tenantry_fair_share_waited 0.0" in text
