"""Requests answered in the gate's own task (JSON mode, ``tenantry.server.single_exchange``)
keep what the SDK's session machinery gives them: a client's ``notifications/cancelled``
stops a call on a handshake-era session, and a session in use does not idle out."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx2
import pytest

from tests.support import web
from tests.support.nap_app import NAP_APP
from tests.support.rpc import LegacySession, post, request
from tests.support.server import RunningServer, start_server

IDLE_SECONDS = 3


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("single-exchange")
    (root / "slow_tools.py").write_text(NAP_APP)
    env = {"TENANTRY_SERVER__SESSION_IDLE_TIMEOUT": str(IDLE_SECONDS)}
    running = start_server(root / "data", app="slow_tools:app", cwd=root, env=env)
    running.cli("tenant", "grant", "acme", "nap")
    yield running
    running.stop()


def nap(session: LegacySession, seconds: float, request_id: int) -> httpx2.Response:
    return session.call("tools/call", {"name": "nap", "arguments": {"seconds": seconds}}, id=request_id)


def test_a_client_cancel_stops_a_call_on_a_handshake_session(server: RunningServer) -> None:
    session = LegacySession(server.mcp_url, server.token("acme", "canceller"))
    assert nap(session, 0, 1).json()["result"]["structuredContent"] == {"result": "rested"}
    answers: list[httpx2.Response] = []
    caller = threading.Thread(target=lambda: answers.append(nap(session, 20, 7)))
    started = time.monotonic()
    caller.start()
    time.sleep(0.5)
    cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 7}}
    assert post(server.mcp_url, cancel, token=session.token, headers=session.headers()).status_code == 202
    caller.join(10)
    assert answers and time.monotonic() - started < 5
    assert answers[0].json()["error"] == {"code": -32800, "message": "Request cancelled"}
    # The control: an uncancelled call on the same session is answered as usual.
    assert nap(session, 0.1, 8).json()["result"]["structuredContent"] == {"result": "rested"}


def test_a_session_in_use_does_not_idle_out_and_an_idle_one_does(server: RunningServer) -> None:
    session = LegacySession(server.mcp_url, server.token("acme", "steady"))
    deadline = time.monotonic() + IDLE_SECONDS * 2
    request_id = 1
    while time.monotonic() < deadline:  # busy for twice the idle timeout
        response = nap(session, 0, request_id)
        assert response.status_code == 200 and "result" in response.json(), response.text
        request_id += 1
        time.sleep(0.5)
    time.sleep(IDLE_SECONDS + 3)  # the registry's sweep runs every 2 s
    gone = post(server.mcp_url, request("tools/list", {}, 99), token=session.token, headers=session.headers())
    assert gone.status_code == 404


def test_ending_a_session_stops_its_calls_still_running(server: RunningServer) -> None:
    session = LegacySession(server.mcp_url, server.token("acme", "leaver"))
    assert nap(session, 0, 1).status_code == 200  # the next calls take the gate's path
    answers: list[httpx2.Response] = []
    caller = threading.Thread(target=lambda: answers.append(nap(session, 20, 2)))
    started = time.monotonic()
    caller.start()
    time.sleep(0.5)
    ended = web.delete(
        server.mcp_url, headers={**session.headers(), "Authorization": f"Bearer {session.token}"}, timeout=10
    )
    assert ended.status_code == 200
    caller.join(10)
    assert answers and time.monotonic() - started < 5
    assert answers[0].json()["error"]["code"] == -32800
    # The control: the session is gone for new requests too.
    gone = post(server.mcp_url, request("tools/list", {}, 3), token=session.token, headers=session.headers())
    assert gone.status_code == 404
