"""Half-sent requests time out and one address cannot hold every connection (slowloris).

Before ``server.header_timeout``/``body_timeout``/``max_connections_per_address``, a client
with no credential could open connections and send nothing, or headers or a body a byte at
a time, and hold each connection for ever. Each refusal below sits beside a genuine call
served at the same time.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx2
import pytest

from tests.support import web
from tests.support.rpc import modern_call
from tests.support.server import RunningServer, start_server

HEADER_TIMEOUT = 2.0
BODY_TIMEOUT = 3.0
CAP = 6
SLACK = 4.0  # two shared cores: generous
WHOAMI = {"name": "whoami", "arguments": {}}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(
        tmp_path_factory.mktemp("connections") / "data",
        env={
            "TENANTRY_SERVER__HEADER_TIMEOUT": str(HEADER_TIMEOUT),
            "TENANTRY_SERVER__BODY_TIMEOUT": str(BODY_TIMEOUT),
            "TENANTRY_SERVER__MAX_CONNECTIONS_PER_ADDRESS": str(CAP),
        },
    )
    yield running
    running.stop()


@pytest.fixture(scope="module")
def token(server: RunningServer) -> str:
    return server.token("acme", "alice", ttl="30m")


def _connect(server: RunningServer) -> socket.socket:
    url = urlsplit(server.base_url)
    sock = socket.create_connection((url.hostname, url.port), timeout=HEADER_TIMEOUT + BODY_TIMEOUT + SLACK + 5)
    return sock


def _read_until_closed(sock: socket.socket) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and when it closed (seconds)."""
    started = time.monotonic()
    received = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        received += chunk
    return received, time.monotonic() - started


def _genuine_call_works(server: RunningServer, token: str) -> None:
    answer = modern_call(server.mcp_url, token, "tools/call", WHOAMI)
    assert answer.status_code == 200, answer.text
    assert answer.json()["result"]["structuredContent"]["tenant_id"] == "acme"


def _host(server: RunningServer) -> str:
    return urlsplit(server.base_url).netloc


def test_a_connection_that_sends_nothing_is_closed(server: RunningServer, token: str) -> None:
    sock = _connect(server)
    try:
        _genuine_call_works(server, token)
        received, elapsed = _read_until_closed(sock)
    finally:
        sock.close()
    assert received == b""  # nothing was asked: no response, just the close
    assert elapsed < HEADER_TIMEOUT + SLACK


@pytest.mark.parametrize("partial", [b"POST /mcp HTTP/1.1\r\n", b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Le"])
def test_a_partial_header_is_answered_408_and_closed(server: RunningServer, token: str, partial: bytes) -> None:
    sock = _connect(server)
    try:
        sock.sendall(partial)
        _genuine_call_works(server, token)  # served meanwhile
        received, elapsed = _read_until_closed(sock)
    finally:
        sock.close()
    assert received.startswith(b"HTTP/1.1 408 "), received
    assert b"request_timeout" in received
    assert elapsed < HEADER_TIMEOUT + SLACK


def test_headers_trickled_a_byte_at_a_time_still_meet_the_deadline(server: RunningServer, token: str) -> None:
    request = f"GET /healthz HTTP/1.1\r\nHost: {_host(server)}\r\nX-Padding: {'a' * 200}\r\n\r\n".encode()
    sock = _connect(server)
    started = time.monotonic()
    sock.settimeout(0.2)
    received = b""
    try:
        for byte in request:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
            try:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
            except TimeoutError:
                continue  # nothing yet: keep trickling
            except ConnectionResetError:
                break  # the server closed after answering, while the next byte was on its way
        elapsed = time.monotonic() - started
    finally:
        sock.close()
    assert received.startswith(b"HTTP/1.1 408 "), received
    assert elapsed < HEADER_TIMEOUT + SLACK


def test_a_body_that_stops_half_way_is_answered_408(server: RunningServer, token: str) -> None:
    head = (
        f"POST /mcp HTTP/1.1\r\nHost: {_host(server)}\r\nAuthorization: Bearer {token}\r\n"
        "Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
        "MCP-Protocol-Version: 2026-07-28\r\nContent-Length: 5000\r\n\r\n"
    ).encode()
    sock = _connect(server)
    try:
        sock.sendall(head + b'{"jsonrpc": "2.0", ')
        _genuine_call_works(server, token)
        received, elapsed = _read_until_closed(sock)
    finally:
        sock.close()
    assert received.startswith(b"HTTP/1.1 408 "), received
    body = json.loads(received.split(b"\r\n\r\n", 1)[1])
    assert body["error"]["data"]["code"] == "request_timeout"
    assert elapsed < BODY_TIMEOUT + SLACK


def test_a_stalled_body_on_another_route_is_cut_off_too(server: RunningServer, token: str) -> None:
    head = (
        f"POST /oauth/token HTTP/1.1\r\nHost: {_host(server)}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 500\r\n\r\n"
    ).encode()
    sock = _connect(server)
    try:
        sock.sendall(head + b"grant_type=client_")
        received, elapsed = _read_until_closed(sock)
    finally:
        sock.close()
    assert received.startswith(b"HTTP/1.1 408 "), received
    assert elapsed < BODY_TIMEOUT + 1 + SLACK


def test_connections_beyond_the_per_address_cap_are_refused(server: RunningServer, token: str) -> None:
    idle = [_connect(server) for _ in range(CAP - 1)]
    try:
        # Positive control: one more connection (the cap) still gets a genuine call through.
        _genuine_call_works(server, token)
        idle.append(_connect(server))
        extra = _connect(server)
        try:
            received, elapsed = _read_until_closed(extra)
        finally:
            extra.close()
        assert received.startswith(b"HTTP/1.1 503 "), received
        assert b"too_many_connections" in received and b"retry-after" in received.lower()
        assert elapsed < SLACK
    finally:
        for sock in idle:
            sock.close()
    # Once they are gone, the address is served again.
    deadline = time.monotonic() + SLACK
    while True:
        try:
            _genuine_call_works(server, token)
            break
        except (AssertionError, httpx2.TransportError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_kept_alive_clients_are_not_cut_off_between_quick_requests(server: RunningServer, token: str) -> None:
    with web.Client(base_url=server.base_url) as client:
        for _ in range(3):
            assert client.get("/healthz").status_code == 200
            time.sleep(HEADER_TIMEOUT / 2)
        assert client.get("/healthz").status_code == 200
