"""A halt answers every call of the tenant in flight exactly once, over real HTTP, whichever way
each request is served: by the SDK's session loop, by the gate's direct exchange on an open
session, or sessionless; with other sessions of the tenant open and idle, and another tenant's
calls left alone.

A request whose JSON-RPC id is that of another request still in flight on the same session is
refused at once: the SDK files a session's answers by request id, so the second one took the
first one's answer and the first waited for ever (attack review 2026-12-02, finding 6).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx2
import pytest

from tests.support import web
from tests.support.nap_app import NAP_APP
from tests.support.rpc import ACCEPT, HANDSHAKE_VERSION, LegacySession, modern_headers, modern_params, request
from tests.support.server import RunningServer, start_server

SESSION_LOOP = "2025-06-18"
"""A protocol version header other than the negotiated one: the SDK's session loop serves the request."""
DIRECT = HANDSHAKE_VERSION
"""The negotiated one, once the session has served a call: the gate's direct exchange serves it."""


def _nap_server(tmp_path_factory: pytest.TempPathFactory, env: dict[str, str] | None = None) -> RunningServer:
    root = tmp_path_factory.mktemp("halt-answers")
    (root / "nap_tools.py").write_text(NAP_APP)
    return start_server(root / "data", app="nap_tools:app", cwd=root, env=env)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = _nap_server(tmp_path_factory)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def sse_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """Every request of a session is served by the SDK's session loop, as an event stream."""
    running = _nap_server(tmp_path_factory, {"TENANTRY_SERVER__RESPONSE_MODE": "sse"})
    yield running
    running.stop()


class InFlight(threading.Thread):
    """One request, answered (status, body, seconds) or not within ``timeout`` (``status`` None)."""

    def __init__(self, url: str, token: str, body: dict[str, Any], headers: dict[str, str], timeout: float = 20):
        super().__init__(daemon=True)
        self.args = (url, token, body, headers, timeout)
        self.status: int | None = None
        self.body: dict[str, Any] | None = None
        self.seconds = 0.0

    def run(self) -> None:
        url, token, body, headers, timeout = self.args
        started = time.monotonic()
        all_headers = {"Accept": ACCEPT, "Content-Type": "application/json", "Authorization": f"Bearer {token}"}
        try:
            response = web.post(url, json=body, headers={**all_headers, **headers}, timeout=timeout)
        except httpx2.TimeoutException:
            return
        finally:
            self.seconds = time.monotonic() - started
        self.status = response.status_code
        self.body = _final_message(response)

    def sent(self) -> InFlight:
        self.start()
        return self

    def answered(self, within: float) -> InFlight:
        self.join(within)
        assert not self.is_alive(), f"no answer within {within}s"
        return self


def _final_message(response: httpx2.Response) -> dict[str, Any]:
    """The JSON body, or the last message of an event stream (``response_mode = "sse"``)."""
    text = response.text
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        data = [line[5:] for line in text.splitlines() if line.startswith("data:") and line[5:].strip()]
        text = data[-1] if data else ""
    try:
        message = json.loads(text)
    except ValueError:
        return {"not_json": response.text[:200]}
    return message if isinstance(message, dict) else {"not_an_object": message}


def on_session(session: LegacySession, version: str) -> dict[str, str]:
    return {"Mcp-Session-Id": session.session_id, "MCP-Protocol-Version": version}


def nap(seconds: float, id: int) -> dict[str, Any]:
    return request("tools/call", {"name": "nap", "arguments": {"seconds": seconds}}, id)


def cancelled(call: InFlight) -> bool:
    result = (call.body or {}).get("result") or {}
    return call.status == 200 and result.get("_meta", {}).get("io.tenantry/error", {}).get("code") == "call_cancelled"


def nap_records(server: RunningServer, tenant: str, event_type: str) -> list[tuple[str, str | None]]:
    return [
        (r["result_status"], r["reason"])
        for r in server.audit_records(tenant)
        if r["event_type"] == event_type and r["tool_name"] == "nap"
    ]


def wait_for_starts(server: RunningServer, tenant: str, count: int) -> None:
    deadline = time.monotonic() + 10
    while len(nap_records(server, tenant, "call_started")) < count:
        assert time.monotonic() < deadline, "the calls did not start"
        time.sleep(0.2)


def busy_tenant(server: RunningServer, tenant: str) -> tuple[str, list[LegacySession], LegacySession]:
    """A tenant with three idle sessions and one that has served a call (its direct exchange is live)."""
    server.cli("tenant", "create", tenant, "--tools", "nap,whoami")
    token = server.token(tenant, "agent")
    idle = [LegacySession(server.mcp_url, token) for _ in range(3)]
    session = LegacySession(server.mcp_url, token)
    assert session.call("tools/call", {"name": "whoami", "arguments": {}}, id=1).status_code == 200
    return token, idle, session


@pytest.mark.parametrize("path", [SESSION_LOOP, DIRECT], ids=["session_loop", "direct"])
def test_a_request_reusing_the_id_of_one_in_flight_is_refused_and_the_first_is_still_answered(
    server: RunningServer, path: str
) -> None:
    check_duplicate_id_refused(server, f"dup-id-{path}", path)


def test_a_request_reusing_an_id_in_flight_is_refused_in_sse_mode_too(sse_server: RunningServer) -> None:
    check_duplicate_id_refused(sse_server, "dup-id-sse", DIRECT)


def check_duplicate_id_refused(server: RunningServer, tenant: str, path: str) -> None:
    token, _idle, session = busy_tenant(server, tenant)
    first = InFlight(server.mcp_url, token, nap(30, id=7), on_session(session, path)).sent()
    wait_for_starts(server, tenant, 1)

    second = InFlight(server.mcp_url, token, nap(30, id=7), on_session(session, path), timeout=5).sent().answered(6)
    assert second.status == 400 and second.seconds < 2
    assert second.body is not None and second.body["id"] == 7
    assert second.body["error"]["code"] == -32600 and "already in flight" in second.body["error"]["message"]
    # Positive control: another id on the same session, meanwhile, is served.
    whoami = request("tools/call", {"name": "whoami"}, 8)
    other = InFlight(server.mcp_url, token, whoami, on_session(session, path)).sent()
    assert other.answered(10).status == 200 and other.body is not None and "result" in other.body

    server.cli("tenant", "halt", tenant, "--reason", "duplicate id test")
    assert cancelled(first.answered(10)), first.body
    assert nap_records(server, tenant, "call_started") == [("started", None)]  # the second never ran
    assert nap_records(server, tenant, "tool_call") == [("cancelled", "call_cancelled")]


def test_a_halt_answers_every_call_in_flight_on_every_path_and_spares_another_tenant(server: RunningServer) -> None:
    check_halt_answers_every_call(server, "halt-every-path")


def test_a_halt_answers_every_call_in_flight_in_sse_mode_too(sse_server: RunningServer) -> None:
    check_halt_answers_every_call(sse_server, "halt-every-path-sse")


def check_halt_answers_every_call(server: RunningServer, tenant: str) -> None:
    token, _idle, session = busy_tenant(server, tenant)
    sessionless = {**modern_headers("tools/call", {"name": "nap"}), "MCP-Protocol-Version": "2026-07-28"}
    modern_nap = request("tools/call", modern_params({"name": "nap", "arguments": {"seconds": 30}}))
    calls = [
        InFlight(server.mcp_url, token, nap(30, id=10), on_session(session, SESSION_LOOP)),
        InFlight(server.mcp_url, token, nap(30, id=11), on_session(session, SESSION_LOOP)),
        InFlight(server.mcp_url, token, nap(30, id=12), on_session(session, DIRECT)),
        InFlight(server.mcp_url, token, nap(30, id=13), on_session(session, DIRECT)),
        InFlight(server.mcp_url, token, modern_nap, sessionless),
        InFlight(server.mcp_url, token, modern_nap, sessionless),
    ]
    server.cli("tenant", "grant", "globex", "nap")
    globex = server.token("globex", "bystander")
    globex_session = LegacySession(server.mcp_url, globex)
    modern_short = request("tools/call", modern_params({"name": "nap", "arguments": {"seconds": 8}}))
    bystanders = [
        InFlight(server.mcp_url, globex, nap(8, id=20), on_session(globex_session, SESSION_LOOP)),
        InFlight(server.mcp_url, globex, modern_short, sessionless),
    ]
    for call in (*calls, *bystanders):
        call.start()
    wait_for_starts(server, tenant, len(calls))

    halted = time.monotonic()
    server.cli("tenant", "halt", tenant, "--reason", "every path test")
    assert all(call.is_alive() for call in bystanders), "the other tenant's calls must be in flight during the halt"
    for call in calls:
        assert cancelled(call.answered(10)), call.body
    assert time.monotonic() - halted < 5, "the halted calls were not answered promptly"
    assert nap_records(server, tenant, "tool_call") == [("cancelled", "call_cancelled")] * len(calls)
    for call in bystanders:
        assert call.answered(15).status == 200 and call.body is not None
        assert call.body["result"]["content"][0]["text"] == "rested"


def test_an_id_may_be_used_again_once_its_request_was_answered(server: RunningServer) -> None:
    token, _idle, session = busy_tenant(server, "dup-id-sequential")
    for version in (SESSION_LOOP, DIRECT, SESSION_LOOP, DIRECT):
        call = InFlight(server.mcp_url, token, nap(0, id=2), on_session(session, version)).sent()
        assert call.answered(10).status == 200 and call.body is not None, version
        assert call.body["result"]["content"][0]["text"] == "rested", version


class OpenStream(threading.Thread):
    """A session's standalone GET stream, held open until the server ends it."""

    def __init__(self, session: LegacySession) -> None:
        super().__init__(daemon=True)
        self.session = session
        self.opened = threading.Event()
        self.status: int | None = None

    def run(self) -> None:
        headers = {**self.session.headers(), "Accept": "text/event-stream"}
        headers["Authorization"] = f"Bearer {self.session.token}"
        with (
            contextlib.suppress(httpx2.HTTPError),
            web.stream("GET", self.session.url, headers=headers, timeout=20) as response,
        ):
            self.status = response.status_code
            self.opened.set()
            for _ in response.iter_bytes():
                pass


def seconds_from_halt_to_close(server: RunningServer, tenant: str) -> list[float]:
    records = server.audit_records(tenant)
    [halted] = [r["timestamp"] for r in records if r["event_type"] == "tenant_halted"]
    closed = [r["timestamp"] for r in records if r["event_type"] == "connection_closed"]
    at = datetime.fromisoformat
    return [(at(c) - at(halted)).total_seconds() for c in closed]


@pytest.mark.parametrize("streaming", [True, False], ids=["get_stream_open", "control"])
def test_a_halt_closes_a_session_with_its_get_stream_open_at_once(server: RunningServer, streaming: bool) -> None:
    tenant = f"halt-stream-{streaming}".lower()
    server.cli("tenant", "create", tenant, "--tools", "nap")
    session = LegacySession(server.mcp_url, server.token(tenant, "agent"))
    stream = OpenStream(session)
    if streaming:
        stream.start()
        assert stream.opened.wait(10) and stream.status == 200
    server.cli("tenant", "halt", tenant, "--reason", "stream test")
    deadline = time.monotonic() + 10
    while not (delays := seconds_from_halt_to_close(server, tenant)):
        assert time.monotonic() < deadline, "the halt did not close the session"
        time.sleep(0.2)
    # The stream has nothing to answer: the session closes without waiting out the halt's grace (2 s)
    # (tests/unit/test_halt_session_close.py pins the wait itself; here, end to end).
    assert delays[0] < 1.0, delays
    if streaming:
        stream.join(10)
        assert not stream.is_alive(), "the stream outlived its session"
