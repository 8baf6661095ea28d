"""The direct ``tools/call`` path of HTTP upstreams (aiohttp) against a scripted HTTP/1.1 server on loopback.

The server answers each request with the next scripted answer, sent in the chunks the test
chooses, then closes the connection; a resolver is injected (a DNS server that answers what the
test says). Everything else (aiohttp, its sockets, the parsing) is the real thing.
"""

from __future__ import annotations

import gzip
import json
import ssl
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from anyio.abc import ByteStream

from tenantry.core.errors import ResultTooLarge
from tenantry.gateway.errors import UpstreamError, UpstreamUnavailable
from tenantry.gateway.http_calls import HttpCalls, _EventParser
from tenantry.gateway.transports import Resolver, guarded_session, http_streams
from tests.support.loopback import Dns, serving
from tests.unit.test_upstream_address_guard import _certificate

pytestmark = pytest.mark.anyio

HOST = "upstream.test"
PUBLIC = "93.184.215.14"
MAX_MESSAGE = 4096


@dataclass
class Request:
    head: str
    headers: dict[str, str]
    body: bytes

    @property
    def id(self) -> Any:
        return json.loads(self.body)["id"] if self.body else None


Answer = Callable[[Request], list[bytes]]


@dataclass
class Upstream:
    """Answers each request with the next of ``answers`` (chunk by chunk), then closes the connection."""

    answers: list[Answer] = field(default_factory=list)
    port: int = 0
    connections: int = 0
    requests: list[Request] = field(default_factory=list)
    server_names: list[str | None] = field(default_factory=list)

    async def handle(self, stream: ByteStream) -> None:
        self.connections += 1
        with suppress(anyio.EndOfStream, anyio.BrokenResourceError, ssl.SSLError, OSError):
            async with stream:
                request = await read_request(stream)
                self.requests.append(request)
                for chunk in self.answers.pop(0)(request):
                    await stream.send(chunk)
                    await anyio.sleep(0.02)  # each chunk reaches the client on its own


async def read_request(stream: ByteStream) -> Request:
    data = b""
    while b"\r\n\r\n" not in data:
        data += await stream.receive()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {n.strip().lower(): v.strip() for n, _, v in (line.partition(":") for line in lines[1:])}
    while len(body) < int(headers.get("content-length", "0")):
        body += await stream.receive()
    return Request(lines[0], headers, body)


@dataclass
class Stalling:
    """Never answers a call (until the test ends); takes any other message with a 202."""

    requests: list[Request] = field(default_factory=list)
    arrived: anyio.Event = field(default_factory=anyio.Event)

    async def handle(self, stream: ByteStream) -> None:
        with suppress(anyio.EndOfStream, anyio.BrokenResourceError, OSError):
            async with stream:
                request = await read_request(stream)
                self.requests.append(request)
                self.arrived.set()
                if json.loads(request.body).get("method") == "tools/call":
                    await anyio.sleep(60)
                await stream.send(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    async def next_request(self) -> Request:
        with anyio.fail_after(5):
            await self.arrived.wait()
        self.arrived = anyio.Event()
        return self.requests[-1]


@asynccontextmanager
async def upstream(*answers: Answer, tls: ssl.SSLContext | None = None) -> AsyncIterator[Upstream]:
    state = Upstream(list(answers))
    async with serving(state.handle, tls=tls, server_names=state.server_names) as port:
        state.port = port
        yield state


def result(request: Request, text: str = "hi") -> bytes:
    answer = {"jsonrpc": "2.0", "id": request.id, "result": {"content": [{"type": "text", "text": text}]}}
    return json.dumps(answer).encode()


def json_answer(payload: Callable[[Request], bytes], *, headers: str = "", length: bool = True) -> Answer:
    def answer(request: Request) -> list[bytes]:
        body = payload(request)
        sized = f"Content-Length: {len(body)}\r\n" if length else ""
        head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{sized}{headers}Connection: close\r\n\r\n"
        return [head.encode(), body]

    return answer


def sse_answer(chunks: Callable[[Request], list[bytes]]) -> Answer:
    def answer(request: Request) -> list[bytes]:
        head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
        return [head, *chunks(request)]

    return answer


@dataclass
class Calls:
    direct: HttpCalls
    failures: list[str] = field(default_factory=list)
    notifications: list[Any] = field(default_factory=list)

    async def call(self) -> types.CallToolResult:
        async def noted(notification: Any) -> None:
            self.notifications.append(notification)

        return await self.direct.call_tool(
            "echo",
            {"text": "hi"},
            stamp=lambda data, opts: None,
            on_notification=noted,
            fail_session=self.failures.append,
        )


@asynccontextmanager
async def direct_calls(
    url: str,
    *,
    allow_private: bool = True,
    resolver: Resolver | None = None,
    headers: dict[str, str] | None = None,
    verify: ssl.SSLContext | bool = True,
) -> AsyncIterator[Calls]:
    direct = HttpCalls("echo", url, max_message=MAX_MESSAGE)
    dns = resolver or Dns(["127.0.0.1"])
    session = guarded_session(
        url, headers or {}, allow_private=allow_private, connect_timeout=2, resolver=dns, verify=verify
    )
    try:
        async with anyio.create_task_group() as tasks:
            direct.attach(session, tasks.start_soon)
            direct.session_id, direct.protocol_version = "session-1", "2025-06-18"  # as observed at the handshake
            yield Calls(direct)
            tasks.cancel_scope.cancel()
    finally:
        await session.close()


def text_of(answer: types.CallToolResult) -> str:
    return "".join(c.text for c in answer.content if isinstance(c, types.TextContent))


EVENTS = (
    b": a comment\r\n"
    b"id: 1\r\ndata:\r\n\r\n"
    b'event: message\rdata: {"a":\rdata:  1}\r\r'
    b"retry: 250\nid: 2\ndata: two\n\n"
    b"event: other\r\ndata: x\r\n\r\n"
    b"data: unterminated"
)
PARSED = [
    ("message", "", "1", None),
    ("message", '{"a":\n 1}', "1", None),
    ("message", "two", "2", 250),
    ("other", "x", "2", None),
]


def parsed(chunks: list[bytes]) -> list[tuple[str, str, str, int | None]]:
    parser = _EventParser(MAX_MESSAGE, lambda: ResultTooLarge("too large"))
    return [(e.event, e.data, e.id, e.retry) for chunk in chunks for e in parser.feed(chunk)]


def test_events_split_anywhere_with_crlf_cr_or_lf_line_ends_parse_alike() -> None:
    assert parsed([EVENTS]) == PARSED
    for cut in range(1, len(EVENTS)):  # a \r\n split between two chunks is one line end
        assert parsed([EVENTS[:cut], EVENTS[cut:]]) == PARSED, cut
    assert parsed([EVENTS[i : i + 1] for i in range(len(EVENTS))]) == PARSED


def test_a_multibyte_character_split_between_chunks_is_decoded_whole() -> None:
    line = "data: caf\u00e9 \u2713\n\n".encode()
    for cut in range(1, len(line)):
        assert parsed([line[:cut], line[cut:]]) == [("message", "caf\u00e9 \u2713", "", None)], cut


def test_a_megabytes_long_event_costs_about_what_decoding_its_json_costs() -> None:
    """Attack review finding 7: a line-end regex over every chunk made a 4 MB answer hold the
    event loop for 20-30 ms, four times its ``json.loads`` or more; the line ends are memchr
    scans now. The fastest of three of each, so that a loaded host slows both alike."""
    text = "x" * 4_000_000
    body = ("data: " + json.dumps({"text": text}) + "\r\n\r\n").encode()
    chunks = [body[i : i + 65536] for i in range(0, len(body), 65536)]

    def parse_once() -> float:
        parser = _EventParser(len(body), lambda: ResultTooLarge("too large"))
        began = time.perf_counter()
        events = [e for chunk in chunks for e in parser.feed(chunk)]
        took = time.perf_counter() - began
        assert len(events) == 1 and json.loads(events[0].data) == {"text": text}  # positive control
        return took

    def decode_once() -> float:
        began = time.perf_counter()
        json.loads(body[6:])
        return time.perf_counter() - began

    parsing, decoding = min(parse_once() for _ in range(3)), min(decode_once() for _ in range(3))
    assert parsing < 2 * decoding, (parsing, decoding)


def test_an_event_over_the_limit_is_refused_even_before_its_line_ends() -> None:
    with pytest.raises(ResultTooLarge):
        parsed([b"data: ", b"x" * MAX_MESSAGE])
    with pytest.raises(ResultTooLarge):
        parsed([b"data: " + b"x" * 3000 + b"\r\n", b"data: " + b"x" * 3000 + b"\r\n"])
    assert parsed([b"data: " + b"x" * 3000 + b"\r\n\r\n", b"data: " + b"y" * 3000 + b"\r\n\r\n"]) == [
        ("message", "x" * 3000, "", None),
        ("message", "y" * 3000, "", None),
    ]  # positive control: the limit is per event


async def test_an_sse_answer_split_across_chunks_with_crlf_and_cr_line_ends_is_read() -> None:
    def chunks(request: Request) -> list[bytes]:
        answer = b"data: " + result(request, "over sse")
        changed = b'{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}'
        return [
            b"id: 7\r\nda",
            b"ta: \r\n\r",
            b"\nevent: message\rdata: " + changed + b"\r\r",
            b"event: message\r\n" + answer[:20],
            answer[20:] + b"\r",
            b"\n\r\n",
        ]

    async with upstream(sse_answer(chunks)) as up, direct_calls(f"http://{HOST}:{up.port}/mcp") as calls:
        assert text_of(await calls.call()) == "over sse"
    assert [type(n) for n in calls.notifications] == [types.ToolListChangedNotification]
    assert calls.failures == []


@pytest.mark.parametrize("length", [True, False], ids=["content-length", "until-close"])
async def test_an_oversized_json_answer_is_result_too_large_and_the_session_lives_on(length: bool) -> None:
    def big(request: Request) -> bytes:
        return result(request, "x" * MAX_MESSAGE)

    async with (
        upstream(json_answer(big, length=length), json_answer(result)) as up,
        direct_calls(f"http://{HOST}:{up.port}/mcp") as calls,
    ):
        with pytest.raises(ResultTooLarge):
            await calls.call()
        assert text_of(await calls.call()) == "hi"  # the same session answers the next call
    assert calls.failures == []


async def test_an_oversized_event_is_result_too_large_and_the_session_lives_on() -> None:
    def endless(request: Request) -> list[bytes]:
        return [b"event: message\r\ndata: ", *[b"x" * 1024] * (MAX_MESSAGE // 1024 + 2)]

    def small(request: Request) -> list[bytes]:
        return [b"data: " + result(request) + b"\r\n\r\n"]

    async with (
        upstream(sse_answer(endless), sse_answer(small)) as up,
        direct_calls(f"http://{HOST}:{up.port}/mcp") as calls,
    ):
        with pytest.raises(ResultTooLarge):
            await calls.call()
        assert text_of(await calls.call()) == "hi"
    assert calls.failures == []


async def test_a_compressed_answer_is_refused_and_identity_is_asked_for() -> None:
    def zipped(request: Request) -> bytes:
        return gzip.compress(result(request))

    async with (
        upstream(
            json_answer(zipped, headers="Content-Encoding: gzip\r\n"),
            json_answer(result, headers="Content-Encoding: identity\r\n"),
        ) as up,
        direct_calls(f"http://{HOST}:{up.port}/mcp") as calls,
    ):
        with pytest.raises(UpstreamError, match="encoded"):
            await calls.call()
        assert text_of(await calls.call()) == "hi"  # positive control: identity is accepted
    assert [r.headers["accept-encoding"] for r in up.requests] == ["identity", "identity"]


@pytest.mark.parametrize("answer", [["127.0.0.1"], [PUBLIC, "169.254.169.254"], ["::ffff:10.0.0.1"]])
async def test_the_direct_path_refuses_a_name_resolving_to_a_private_address(answer: list[str]) -> None:
    async with upstream(json_answer(result)) as up:
        dns = Dns(answer)
        async with direct_calls(f"http://{HOST}:{up.port}/mcp", allow_private=False, resolver=dns) as calls:
            with pytest.raises(UpstreamUnavailable, match="private, loopback or link-local"):
                await calls.call()
        assert dns.lookups == [HOST]
        assert up.connections == 0


async def test_the_direct_path_reaches_an_allowed_private_address_by_the_configured_name() -> None:
    async with upstream(json_answer(result)) as up:
        dns = Dns(["127.0.0.1"])
        async with direct_calls(f"http://{HOST}:{up.port}/mcp", allow_private=True, resolver=dns) as calls:
            assert text_of(await calls.call()) == "hi"
        assert dns.lookups == [HOST]
        assert up.requests[0].headers["host"] == f"{HOST}:{up.port}"


@pytest.mark.parametrize("host", ["127.0.0.1", "[::1]", "169.254.169.254", "[::ffff:192.168.1.1]"])
async def test_a_private_ip_literal_host_is_refused_without_asking_the_resolver(host: str) -> None:
    dns = Dns([PUBLIC])
    with pytest.raises(UpstreamUnavailable, match="private, loopback or link-local"):
        guarded_session(f"http://{host}:8080/mcp", {}, allow_private=False, connect_timeout=2, resolver=dns)
    assert dns.lookups == []


async def test_an_allowed_private_ip_literal_host_is_reached() -> None:
    async with upstream(json_answer(result)) as up:
        dns = Dns([PUBLIC])
        async with direct_calls(f"http://127.0.0.1:{up.port}/mcp", allow_private=True, resolver=dns) as calls:
            assert text_of(await calls.call()) == "hi"
        assert dns.lookups == []  # aiohttp connects to a literal by itself: it was checked at construction


async def test_tls_to_the_checked_address_verifies_the_configured_host_name(tmp_path: Path) -> None:
    server, client = _certificate(tmp_path, HOST)
    async with (
        upstream(json_answer(result), tls=server) as up,
        direct_calls(f"https://{HOST}:{up.port}/mcp", verify=client) as calls,
    ):
        assert text_of(await calls.call()) == "hi"
    assert up.server_names == [HOST]  # SNI names the host, not the address connected to
    assert up.requests[0].headers["host"] == f"{HOST}:{up.port}"


async def test_tls_refuses_a_certificate_for_another_name(tmp_path: Path) -> None:
    server, client = _certificate(tmp_path, "someone-else.test")
    async with (
        upstream(json_answer(result), tls=server) as up,
        direct_calls(f"https://{HOST}:{up.port}/mcp", verify=client) as calls,
    ):
        with pytest.raises(UpstreamUnavailable):
            await calls.call()
    assert up.requests == []  # nothing was sent over the unverified connection
    assert calls.failures == ["the connection failed"]


async def test_every_new_connection_resolves_and_checks_again() -> None:
    async with upstream(json_answer(result), json_answer(result)) as up:
        dns = Dns(["127.0.0.1"])
        async with direct_calls(f"http://{HOST}:{up.port}/mcp", resolver=dns) as calls:
            await calls.call()
            await calls.call()  # the upstream closed the first connection
        assert dns.lookups == [HOST, HOST]
        assert up.connections == 2


async def test_a_redirect_is_refused_not_followed() -> None:
    def redirect(request: Request) -> list[bytes]:
        return [b"HTTP/1.1 307 Temporary Redirect\r\nLocation: http://elsewhere.test/\r\nContent-Length: 0\r\n\r\n"]

    async with upstream(redirect) as up, direct_calls(f"http://{HOST}:{up.port}/mcp") as calls:
        with pytest.raises(UpstreamUnavailable, match="redirect"):
            await calls.call()
    assert len(up.requests) == 1


async def test_a_connection_closed_before_the_answer_fails_the_session() -> None:
    async with upstream(lambda request: []) as up, direct_calls(f"http://{HOST}:{up.port}/mcp") as calls:
        with pytest.raises(UpstreamUnavailable, match="closed the connection"):
            await calls.call()
    assert calls.failures == ["the connection failed"]


async def test_a_cancelled_call_ends_at_once_and_the_upstream_is_told() -> None:
    stalling = Stalling()
    async with serving(stalling.handle) as port, direct_calls(f"http://{HOST}:{port}/mcp") as calls:
        with anyio.move_on_after(5) as scope:  # a halt or the call's timeout cancels the awaiting task
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(calls.call)
                call = await stalling.next_request()
                cancelled_at = anyio.current_time()
                tasks.cancel_scope.cancel()
            assert anyio.current_time() - cancelled_at < 0.5  # no socket awaited
        assert not scope.cancelled_caught
        told = await stalling.next_request()
    assert json.loads(call.body)["method"] == "tools/call"
    message = json.loads(told.body)
    assert message["method"] == "notifications/cancelled"
    assert message["params"]["requestId"] == call.id
    assert calls.failures == []  # the session lives on


async def failing_into(errors: list[Exception], calls: Calls) -> None:
    """One call whose failure is kept in ``errors`` (for calls that must fail in the background)."""
    try:
        await calls.call()
    except Exception as exc:
        errors.append(exc)


async def test_a_call_in_flight_when_its_session_closes_is_upstream_unavailable() -> None:
    stalling = Stalling()
    async with serving(stalling.handle) as port, direct_calls(f"http://{HOST}:{port}/mcp") as calls:
        errors: list[Exception] = []

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(failing_into, errors, calls)
                await stalling.next_request()
                assert calls.direct.session is not None
                await calls.direct.session.close()
    assert len(errors) == 1 and isinstance(errors[0], UpstreamUnavailable), errors
    assert calls.failures == ["the connection failed"]


async def test_only_the_configured_headers_and_the_protocols_own_are_sent_and_no_cookie() -> None:
    cookie = json_answer(result, headers="Set-Cookie: sticky=1; Path=/\r\n")
    async with (
        upstream(cookie, json_answer(result)) as up,
        direct_calls(f"http://{HOST}:{up.port}/mcp", headers={"Authorization": "Bearer tenant"}) as calls,
    ):
        await calls.call()
        await calls.call()
    protocol = {"host", "accept", "accept-encoding", "content-type", "content-length", "user-agent"}
    mcp = {"mcp-session-id", "mcp-protocol-version"}
    for request in up.requests:
        assert set(request.headers) == protocol | mcp | {"authorization"}
        assert request.headers["authorization"] == "Bearer tenant"
        assert request.headers["mcp-session-id"] == "session-1"


async def test_http_streams_closes_its_direct_session_with_the_connection() -> None:
    direct = HttpCalls("echo", "http://upstream.test/mcp", max_message=MAX_MESSAGE)
    opened = http_streams(
        "http://upstream.test/mcp", {}, allow_private=True, connect_timeout=2, max_message=MAX_MESSAGE, direct=direct
    )
    async with opened:
        session = direct.session
        assert session is not None and not session.closed
    assert session.closed
    assert direct.session is None


async def test_a_direct_call_in_flight_ends_as_soon_as_its_connection_closes() -> None:
    stalling = Stalling()
    async with serving(stalling.handle) as port:
        url = f"http://127.0.0.1:{port}/mcp"
        direct = HttpCalls("echo", url, max_message=MAX_MESSAGE)
        calls = Calls(direct)
        errors: list[Exception] = []

        with anyio.fail_after(5):
            async with (
                anyio.create_task_group() as tasks,
                http_streams(url, {}, allow_private=True, connect_timeout=2, max_message=MAX_MESSAGE, direct=direct),
            ):
                direct.session_id, direct.protocol_version = "session-1", "2025-06-18"
                tasks.start_soon(failing_into, errors, calls)
                await stalling.next_request()
                await anyio.sleep(0.1)
                assert not errors  # positive control: the call is in flight until the connection closes
    assert len(errors) == 1 and isinstance(errors[0], UpstreamUnavailable), errors
