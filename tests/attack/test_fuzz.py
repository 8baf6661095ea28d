"""Property-based fuzzing of ``/mcp`` over real HTTP, in both protocol eras, and of every demo tool's arguments.

For every request hypothesis makes up (random methods, params, ids, batches, headers, body sizes
around the limit, well- and ill-typed tool arguments), sent as ``acme``:

* the server never answers 5xx;
* no response carries a traceback or exception text (Python file lines, pydantic's wording,
  module or type names) unless the request itself carried those words;
* every response but a 202 has a well-formed JSON body;
* no response to ``acme`` carries ``globex``'s canary;

and all the while another tenant, ``globex``, is served normally: a background thread makes
genuine calls in both eras the whole time, none may fail, and ``acme``'s canary never appears
in its results.

Bounded for CI: a fixed number of examples per property, derandomized (the same inputs on every
run, no example database), no deadline (the machine is shared).

Imports nothing from ``tenantry``: black-box, like the rest of the attack suite.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.support import web
from tests.support.rpc import ACCEPT, HANDSHAKE_VERSION, MODERN_VERSION, modern_headers, modern_params
from tests.support.server import RunningServer, start_server

MAX_BODY = 64 * 1024
ACME_CANARY = "acme-canary"
GLOBEX_CANARY = "globex-canary"
# Words that betray a crash or an implementation detail leaking to the caller.
LEAK_MARKERS = (
    "Traceback",
    'File "',
    "pydantic",
    "validation error for",
    "For further information visit",
    "tenantry.",
    "mcp_types.",
    "mcp.server",
    "mcp.shared",
    "starlette",
    "<class ",
    "NoneType",
    "object has no attribute",
    "KeyError",
    "TypeError",
    "ValueError",
    "AttributeError",
    "RecursionError",
    "UnicodeDecodeError",
)

FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)

KNOWN_METHODS = (
    "initialize",
    "ping",
    "server/discover",
    "tools/list",
    "tools/call",
    "resources/list",
    "resources/read",
    "resources/templates/list",
    "resources/subscribe",
    "resources/unsubscribe",
    "prompts/list",
    "prompts/get",
    "completion/complete",
    "logging/setLevel",
    "notifications/initialized",
    "notifications/cancelled",
    "notifications/progress",
    "notifications/roots/list_changed",
    "sampling/createMessage",
    "elicitation/create",
    "roots/list",
    "tasks/get",
    "tasks/list",
    "tasks/cancel",
    "tasks/result",
)
DEMO_TOOLS = (
    "whoami",
    "query_crm",
    "search_docs",
    "list_files",
    "read_file",
    "write_file",
    "send_email",
    "globex_forecast",
)


# --- the server, the two tenants, and the bystander -------------------------------------------


class Bystander:
    """``globex`` making genuine calls in both eras in a background thread, recording any failure.

    A plain class, not a dataclass: hypothesis prints fixtures with failing examples, and this
    one holds a token.
    """

    def __init__(self, server: RunningServer, token: str) -> None:
        self.server = server
        self.token = token
        self.calls = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"Bystander(calls={self.calls}, failures={len(self.failures)})"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="globex-bystander", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        with web.Client(timeout=20) as client:
            try:
                session = _open_session(client, self.server.mcp_url, self.token)
            except (AssertionError, httpx2.HTTPError) as exc:
                self.failures.append(f"globex could not open a session: {exc}")
                return
            step = 0
            while not self._stop.is_set():
                name, arguments, expect = GLOBEX_CALLS[step % len(GLOBEX_CALLS)]
                handshake = step % 2 == 1
                step += 1
                params = {"name": name, "arguments": arguments}
                try:
                    if handshake:
                        response = _session_post(client, self.server.mcp_url, self.token, session, "tools/call", params)
                    else:
                        response = _modern_post(client, self.server.mcp_url, self.token, "tools/call", params)
                    problem = _bystander_problem(response, expect)
                except httpx2.HTTPError as exc:
                    problem = f"transport error {type(exc).__name__}: {exc}"
                self.calls += 1
                if problem is not None:
                    era = "handshake" if handshake else "sessionless"
                    self.failures.append(f"globex {name} ({era}): {problem}")
                self._stop.wait(0.01)


GLOBEX_CALLS: tuple[tuple[str, dict[str, Any], str], ...] = (
    ("whoami", {}, '"tenant_id":"globex"'),
    ("query_crm", {"filter": ""}, GLOBEX_CANARY),
    ("list_files", {}, "README.md"),
    ("read_file", {"path": "README.md"}, GLOBEX_CANARY),
    ("globex_forecast", {"quarter": "Q1"}, GLOBEX_CANARY),
)


def _bystander_problem(response: httpx2.Response, expect: str) -> str | None:
    if response.status_code != 200:
        return f"HTTP {response.status_code}: {response.text[:300]}"
    body = response.json()
    result = body.get("result")
    if not isinstance(result, dict) or result.get("isError"):
        return f"not a successful result: {response.text[:300]}"
    text = json.dumps(result, separators=(",", ":"))
    if ACME_CANARY in text:
        return "acme's canary in globex's result"
    if expect not in text:
        return f"expected {expect!r} in {text[:300]}"
    return None


class Fuzzing:
    """What the fuzz tests share: one server, one HTTP client, the fuzzers' tokens, the bystander."""

    def __init__(
        self, server: RunningServer, client: httpx2.Client, acme: str, globex_fuzzer: str, bystander: Bystander
    ) -> None:
        self.server = server
        self.client = client
        self.acme = acme
        self.globex_fuzzer = globex_fuzzer
        self.bystander = bystander
        self.sessions: dict[str, str] = {}

    def __repr__(self) -> str:  # printed with every failing example: no tokens
        return f"Fuzzing({self.server.base_url})"

    def session(self, token: str | None = None) -> str:
        """An open handshake-era session of ``token``'s principal (acme's by default)."""
        token = token or self.acme
        if token not in self.sessions:
            self.sessions[token] = _open_session(self.client, self.server.mcp_url, token)
        return self.sessions[token]

    def forget_session(self, token: str | None = None) -> None:
        self.sessions.pop(token or self.acme, None)


@pytest.fixture(scope="module")
def fuzzing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzing]:
    data_dir = tmp_path_factory.mktemp("fuzz") / "data"
    env = {
        # A small body limit makes "near and over the limit" cheap to send.
        "TENANTRY_SERVER__MAX_BODY_BYTES": str(MAX_BODY),
        # The fuzzer is one busy tenant by design: its own rate limit must not hide what it finds.
        "TENANTRY_LIMITS__CALLS_PER_SECOND": "100000",
        "TENANTRY_LIMITS__BURST": "100000",
        "TENANTRY_LIMITS__REQUESTS_PER_SECOND": "100000",
        "TENANTRY_AUTH__FAILED_ATTEMPTS": "100000/minute",  # refused tokens are answered at once
        "TENANTRY_AUDIT__REFUSED_RECORDS_PER_SOURCE": "100000/minute",
        "TENANTRY_AUDIT__REFUSED_RECORDS_TOTAL": "100000/minute",
    }
    server = start_server(data_dir, env=env)
    bystander = Bystander(server, server.token("globex", "bystander", ttl="60m"))
    client = web.Client(timeout=30)
    try:
        bystander.start()
        yield Fuzzing(
            server=server,
            client=client,
            acme=server.token("acme", "fuzzer", ttl="60m"),
            globex_fuzzer=server.token("globex", "fuzzer", ttl="60m"),
            bystander=bystander,
        )
    finally:
        bystander.stop()
        client.close()
        server.stop()


@pytest.fixture(autouse=True)
def globex_is_served_throughout(fuzzing: Fuzzing) -> Iterator[None]:
    before = fuzzing.bystander.calls
    yield
    deadline = time.monotonic() + 10
    while fuzzing.bystander.calls < before + 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fuzzing.bystander.failures == []
    assert fuzzing.bystander.calls >= before + 3, "the bystander made no progress: globex is not being served"


# --- raw HTTP ----------------------------------------------------------------------------------


def _headers(token: str | None, extra: dict[str, str] | None = None) -> dict[str, str]:
    headers = {"Accept": ACCEPT, "Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    headers.update(extra or {})
    return headers


def _open_session(client: httpx2.Client, url: str, token: str) -> str:
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": HANDSHAKE_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "fuzz", "version": "0"},
        },
    }
    response = client.post(url, json=init, headers=_headers(token))
    assert response.status_code == 200, response.text
    session_id = response.headers["mcp-session-id"]
    note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    headers = _headers(token, {"Mcp-Session-Id": session_id, "MCP-Protocol-Version": HANDSHAKE_VERSION})
    assert client.post(url, json=note, headers=headers).status_code == 202
    return session_id


def _session_post(
    client: httpx2.Client, url: str, token: str, session_id: str, method: str, params: dict[str, Any]
) -> httpx2.Response:
    headers = _headers(token, {"Mcp-Session-Id": session_id, "MCP-Protocol-Version": HANDSHAKE_VERSION})
    return client.post(url, json={"jsonrpc": "2.0", "id": 7, "method": method, "params": params}, headers=headers)


def _modern_post(client: httpx2.Client, url: str, token: str, method: str, params: dict[str, Any]) -> httpx2.Response:
    body = {"jsonrpc": "2.0", "id": 7, "method": method, "params": modern_params(params)}
    return client.post(url, json=body, headers=_headers(token, modern_headers(method, params)))


def encode(message: Any) -> bytes:
    """JSON text as a careless client writes it: NaN and Infinity included, non-ASCII as is."""
    return json.dumps(message, allow_nan=True, ensure_ascii=False).encode("utf-8", "surrogatepass")


def check_response(
    response: httpx2.Response, sent: bytes | str, *, foreign_canary: str = GLOBEX_CANARY, json_body: bool = True
) -> None:
    """The properties every response must have, whatever was sent (``foreign_canary``: the other
    tenant's, which must never appear)."""
    sent_text = sent.decode("utf-8", "replace") if isinstance(sent, bytes) else sent
    assert response.status_code < 500, f"HTTP {response.status_code}: {response.text[:500]}"
    text = response.text
    header_text = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
    for marker in LEAK_MARKERS:
        if marker.lower() in sent_text.lower():
            continue  # the request itself carried the word; an echo of it is not a leak
        assert marker not in text, f"{marker!r} in response {response.status_code}: {text[:500]}"
        assert marker not in header_text, f"{marker!r} in response headers: {header_text[:500]}"
    if foreign_canary not in sent_text:
        assert foreign_canary not in text, f"{foreign_canary} in a response to the other tenant"
    if response.status_code == 202 or not json_body:
        return
    content_type = response.headers.get("content-type", "")
    if content_type.startswith("text/event-stream"):
        events = [line[5:].strip() for line in text.splitlines() if line.startswith("data:")]
        assert events, f"an event stream without data: {text[:500]}"
        for event in events:
            _json_document(event)
        return
    assert content_type.startswith("application/json"), f"HTTP {response.status_code} {content_type!r}: {text[:300]}"
    _json_document(text)


def outcome(response: httpx2.Response) -> str:
    """A label for hypothesis's statistics (``--hypothesis-show-statistics``): what fuzzing reached."""
    try:
        error = response.json().get("error")
    except ValueError:
        error = None
    return f"HTTP {response.status_code} " + (str(error.get("code")) if isinstance(error, dict) else "ok")


def _json_document(text: str) -> None:
    def refuse(value: str) -> None:
        raise AssertionError(f"non-standard JSON constant {value} in a response")

    try:
        body = json.loads(text, parse_constant=refuse)
    except json.JSONDecodeError as exc:
        raise AssertionError(f"response is not JSON ({exc}): {text[:300]}") from None
    assert isinstance(body, dict), f"response is not a JSON object: {text[:300]}"
    if "error" in body:
        error = body["error"]
        assert isinstance(error, dict) and isinstance(error.get("code"), int) and isinstance(error.get("message"), str)


# --- strategies --------------------------------------------------------------------------------

printable = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
header_values = printable.map(str.strip)  # what an HTTP client can send: no surrounding whitespace
any_text = st.text(max_size=40)
floats = st.floats(allow_nan=True, allow_infinity=True)
huge_ints = st.integers(min_value=2**63 - 2, max_value=2**256) | st.integers(min_value=-(2**256), max_value=-(2**63))
scalars = st.none() | st.booleans() | st.integers() | huge_ints | floats | any_text
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(any_text, children, max_size=5),
    max_leaves=25,
)
json_objects = st.dictionaries(any_text, json_values, max_size=6)
ids = st.none() | st.booleans() | st.integers() | huge_ints | floats | any_text | st.just(0) | st.just("")
methods = st.sampled_from(KNOWN_METHODS) | any_text | st.sampled_from(DEMO_TOOLS)
names = st.sampled_from(DEMO_TOOLS) | any_text | st.sampled_from(("acme://x", "file:///etc/passwd", "../../x"))
MISSING = object()


@st.composite
def params_for(draw: st.DrawFn, method: str, *, shaped: bool = False) -> Any:
    """Params that look like the method's (often, or always when ``shaped``), or anything at all."""
    shape = "shaped" if shaped else draw(st.sampled_from(("shaped", "random", "missing", "not-an-object")))
    if shape == "missing":
        return MISSING
    if shape == "not-an-object":
        return draw(json_values)
    params = draw(json_objects)
    if shape == "shaped":
        if method in ("tools/call", "prompts/get"):
            params["name"] = draw(names | json_values)
            if draw(st.booleans()):
                params["arguments"] = draw(json_objects | json_values)
        elif method in ("resources/read", "resources/subscribe", "resources/unsubscribe"):
            params["uri"] = draw(names | json_values)
        elif method == "initialize":
            params.update(
                protocolVersion=draw(protocol_versions | json_values),
                capabilities=draw(json_objects | json_values),
                clientInfo=draw(st.fixed_dictionaries({"name": any_text, "version": any_text}) | json_values),
            )
        elif method.endswith("/list"):
            params["cursor"] = draw(any_text | json_values)
        if draw(st.booleans()):
            params["_meta"] = draw(json_objects | json_values)
    return params


@st.composite
def messages(draw: st.DrawFn, *, modern: bool) -> tuple[Any, str]:
    """A JSON-RPC message (or something near one) and the method it names.

    A third are well-formed requests of a known method with random params, so that fuzzing
    reaches the handlers and not only the envelope checks.
    """
    if draw(st.integers(0, 2)) == 0:
        method = draw(st.sampled_from(KNOWN_METHODS))
        params = draw(params_for(method, shaped=True))
        if modern:
            params = modern_params({key: value for key, value in params.items() if key != "_meta"})
        return {"jsonrpc": "2.0", "id": draw(st.integers() | any_text), "method": method, "params": params}, method
    method = draw(methods)
    message: dict[str, Any] = {}
    if draw(st.integers(0, 9)):
        message["jsonrpc"] = "2.0"
    else:
        message["jsonrpc"] = draw(json_values)
    kind = draw(st.sampled_from(("request", "request", "request", "notification", "response", "junk")))
    if kind in ("request", "notification"):
        message["method"] = method if draw(st.integers(0, 9)) else draw(json_values)
    if kind in ("request", "response"):
        message["id"] = draw(ids)
    if kind == "response":
        message.update(draw(st.sampled_from(({"result": {}}, {"error": {"code": -1, "message": "x"}}, {}))))
    if kind == "junk":
        message.update(draw(json_objects))
    params = draw(params_for(method))
    if params is not MISSING:
        if modern and isinstance(params, dict) and draw(st.integers(0, 3)):
            params = modern_params(params) if "_meta" not in params or isinstance(params["_meta"], dict) else params
        message["params"] = params
    if draw(st.integers(0, 19)) == 0:  # a batch
        return [message, *draw(st.lists(json_values, max_size=3))], method
    return message, method


protocol_versions = (
    st.sampled_from(
        (MODERN_VERSION, HANDSHAKE_VERSION, "2025-06-18", "2025-03-26", "2024-11-05", "2099-01-01", "", "latest")
    )
    | header_values
)
content_types = (
    st.sampled_from(
        (
            "application/json",
            "application/json; charset=utf-8",
            "APPLICATION/JSON",
            "application/json;;",
            "application/jsonx",
            "text/plain",
            "text/event-stream",
            "multipart/form-data; boundary=x",
            "",
        )
    )
    | header_values
)
accepts = (
    st.sampled_from(
        (
            ACCEPT,
            "application/json",
            "text/event-stream",
            "*/*",
            "application/*",
            "text/html",
            "",
            "application/json;q=0, text/event-stream;q=0",
        )
    )
    | header_values
)


@st.composite
def header_sets(draw: st.DrawFn, method: str, params: Any) -> dict[str, str]:
    """Headers for the request: right for a third, else usually right, often mismatching the body,
    sometimes nonsense."""
    if draw(st.integers(0, 2)) == 0:
        routing = modern_headers(method, params if isinstance(params, dict) else None)
        return {"Content-Type": "application/json", "Accept": ACCEPT} | {
            name: value for name, value in routing.items() if _header_safe(value)
        }
    headers: dict[str, str] = {}
    if draw(st.integers(0, 3)):
        headers["Content-Type"] = "application/json"
    else:
        headers["Content-Type"] = draw(content_types)
    if draw(st.integers(0, 3)):
        headers["Accept"] = ACCEPT
    elif draw(st.booleans()):
        headers["Accept"] = draw(accepts)
    if draw(st.integers(0, 2)):
        headers["MCP-Protocol-Version"] = MODERN_VERSION
    elif draw(st.booleans()):
        headers["MCP-Protocol-Version"] = draw(protocol_versions)
    routing = modern_headers(method, params if isinstance(params, dict) else None)
    for name in ("Mcp-Method", "Mcp-Name"):
        choice = draw(st.sampled_from(("right", "right", "wrong", "absent")))
        if choice == "right" and name in routing and _header_safe(routing[name]):
            headers[name] = routing[name]
        elif choice == "wrong":
            headers[name] = draw(st.sampled_from(KNOWN_METHODS + DEMO_TOOLS) | header_values)
    if draw(st.integers(0, 9)) == 0:
        headers[draw(st.sampled_from(("Mcp-Session-Id", "Last-Event-ID", "Origin", "X-Forwarded-For")))] = draw(
            header_values
        )
    return headers


def _header_safe(value: str) -> bool:
    """Whether an HTTP client can send ``value`` as is (a real client would encode the rest)."""
    return all(0x20 <= ord(char) < 0x7F for char in value)


# --- properties: /mcp ------------------------------------------------------------------------


@settings(FUZZ, max_examples=300)
@given(data=st.data())
def test_sessionless_era_survives_random_messages_and_headers(fuzzing: Fuzzing, data: st.DataObject) -> None:
    message, method = data.draw(messages(modern=True), label="message")
    params = message.get("params") if isinstance(message, dict) else None
    headers = data.draw(header_sets(method, params), label="headers")
    raw = encode(message)
    response = fuzzing.client.post(fuzzing.server.mcp_url, content=raw, headers=_auth(fuzzing.acme, headers))
    check_response(response, raw + json.dumps(headers).encode())
    event(outcome(response))


@settings(FUZZ, max_examples=250)
@given(data=st.data())
def test_handshake_era_survives_random_messages_and_headers(fuzzing: Fuzzing, data: st.DataObject) -> None:
    message, _ = data.draw(messages(modern=False), label="message")
    headers = {"Content-Type": "application/json", "Accept": ACCEPT, "MCP-Protocol-Version": HANDSHAKE_VERSION}
    if data.draw(st.integers(0, 4)) == 0:
        headers["MCP-Protocol-Version"] = data.draw(protocol_versions, label="version")
    if data.draw(st.integers(0, 9)) == 0:
        headers["Accept"] = data.draw(accepts, label="accept")
    own_session = data.draw(st.integers(0, 9), label="session") != 0
    headers["Mcp-Session-Id"] = fuzzing.session() if own_session else data.draw(header_values, label="session id")
    raw = encode(message)
    response = fuzzing.client.post(fuzzing.server.mcp_url, content=raw, headers=_auth(fuzzing.acme, headers))
    check_response(response, raw + json.dumps(headers).encode())
    event(outcome(response))
    if own_session and response.status_code == 404:
        fuzzing.forget_session()  # the message ended the session: open another for the next example


@settings(FUZZ, max_examples=50)
@given(
    size=st.integers(MAX_BODY - 300, MAX_BODY + 300) | st.integers(MAX_BODY * 2, MAX_BODY * 4),
    modern=st.booleans(),
    framing=st.sampled_from(("length", "chunked", "declared-small", "declared-huge", "declared-junk")),
)
def test_bodies_near_and_over_the_limit(fuzzing: Fuzzing, size: int, modern: bool, framing: str) -> None:
    params = {"name": "write_file", "arguments": {"path": "fuzz/big.txt", "content": ""}}
    message = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": modern_params(params) if modern else params}
    message["params"]["arguments"]["content"] = "x" * max(0, size - len(encode(message)))
    raw = encode(message)
    if modern:
        headers = modern_headers("tools/call", params)
    else:
        headers = {"Mcp-Session-Id": fuzzing.session(), "MCP-Protocol-Version": HANDSHAKE_VERSION}
    headers = _auth(fuzzing.acme, {"Content-Type": "application/json", "Accept": ACCEPT, **headers})
    if framing == "length":
        response = fuzzing.client.post(fuzzing.server.mcp_url, content=raw, headers=headers)
    elif framing == "chunked":
        chunks = [raw[i : i + 8192] for i in range(0, len(raw), 8192)]
        response = fuzzing.client.post(fuzzing.server.mcp_url, content=iter(chunks), headers=headers)
    else:
        declared = {"declared-small": "10", "declared-huge": str(10**12), "declared-junk": "12x"}[framing]
        response = _post_with_declared_length(fuzzing.server.base_url, raw, headers, declared)
        if framing == "declared-junk":
            # The HTTP parser refuses it before the application sees it: only "no crash, no leak" applies.
            assert response.status_code == 400
            check_response(response, raw, json_body=False)
            return
    check_response(response, raw)
    if len(raw) > MAX_BODY and framing in ("length", "chunked", "declared-huge"):
        assert response.status_code == 413, response.text[:300]
    if framing == "declared-huge":
        assert response.status_code == 413, response.text[:300]
    if response.status_code == 200:
        assert len(raw) <= MAX_BODY and framing in ("length", "chunked")
        assert "error" not in response.json(), response.text[:300]


@settings(FUZZ, max_examples=50)
@given(
    method=st.sampled_from(("GET", "DELETE", "PUT", "PATCH", "OPTIONS", "HEAD", "TRACE")),
    version=st.none() | protocol_versions,
    session_id=st.none() | header_values,
    accept=accepts,
    body=st.binary(max_size=64),
)
def test_http_methods_in_both_eras(
    fuzzing: Fuzzing, method: str, version: str | None, session_id: str | None, accept: str, body: bytes
) -> None:
    # No valid session id here: a GET on one's own session is the (endless) server-to-client stream.
    headers = {"Accept": accept}
    if version is not None:
        headers["MCP-Protocol-Version"] = version
    if session_id is not None:
        headers["Mcp-Session-Id"] = session_id
    response = fuzzing.client.request(
        method, fuzzing.server.mcp_url, content=body, headers=_auth(fuzzing.acme, headers)
    )
    check_response(response, body + json.dumps(headers).encode(), json_body=method != "HEAD")
    assert response.status_code in (400, 404, 405, 406), response.text[:300]


def _post_with_declared_length(base_url: str, body: bytes, headers: dict[str, str], declared: str) -> httpx2.Response:
    """POST ``body`` over a raw socket with a ``Content-Length`` that lies (no HTTP client sends one)."""
    host, port = base_url.removeprefix("http://").split(":")
    lines = ["POST /mcp HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {declared}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        with contextlib.suppress(OSError):  # the server may answer and close before reading it all
            sock.sendall(body)
        received = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                received += chunk
    head, _, payload = received.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    response_headers = [tuple(line.split(": ", 1)) for line in header_lines if ": " in line]
    return httpx2.Response(
        int(status_line.split()[1]), headers=response_headers, content=_dechunk(payload, response_headers)
    )


def _dechunk(payload: bytes, headers: list[tuple[str, ...]]) -> bytes:
    if not any(name.lower() == "transfer-encoding" and "chunked" in value for name, value in headers):
        return payload
    out = b""
    while payload:
        size_line, _, rest = payload.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        payload = rest[size + 2 :]
    return out


def _auth(token: str, headers: dict[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **headers}


# --- properties: every demo tool's arguments -------------------------------------------------

paths = st.sampled_from(
    ("README.md", "reports/q3.txt", "fuzz/a.txt", "../globex/README.md", "/etc/passwd", "a/../../b", "%2e%2e/x", "")
) | st.text(max_size=30)
WELL_TYPED: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "whoami": st.just({}),
    "query_crm": st.fixed_dictionaries({}, optional={"filter": any_text, "limit": st.integers(1, 100)}),
    "search_docs": st.fixed_dictionaries(
        {"query": st.text(min_size=1, max_size=200)}, optional={"limit": st.integers(1, 20)}
    ),
    "list_files": st.fixed_dictionaries({}, optional={"prefix": paths}),
    "read_file": st.fixed_dictionaries({"path": paths}),
    "write_file": st.fixed_dictionaries({"path": paths, "content": st.text(max_size=200)}),
    "send_email": st.fixed_dictionaries(
        {
            "to": st.sampled_from(("a@b.example", "x@acme.example")) | printable,
            "subject": st.text(max_size=50),
            "body": st.text(max_size=200),
        }
    ),
    "globex_forecast": st.fixed_dictionaries(
        {"quarter": st.sampled_from(("Q1", "Q2", "Q3", "Q4", "Q5", "")) | printable}
    ),
}
PARAMETERS = {
    "whoami": (),
    "query_crm": ("filter", "limit"),
    "search_docs": ("query", "limit"),
    "list_files": ("prefix",),
    "read_file": ("path",),
    "write_file": ("path", "content"),
    "send_email": ("to", "subject", "body"),
    "globex_forecast": ("quarter",),
}


@st.composite
def ill_typed(draw: st.DrawFn, tool: str) -> dict[str, Any]:
    """The tool's own parameters (some missing) with values of any type, plus unexpected ones."""
    arguments = {name: draw(json_values) for name in PARAMETERS[tool] if draw(st.integers(0, 4))}
    if draw(st.booleans()) or not arguments:
        arguments.update(draw(json_objects))
    return arguments


@settings(FUZZ, max_examples=320)
@given(
    tool=st.sampled_from(DEMO_TOOLS),
    data=st.data(),
    well=st.booleans(),
    modern=st.booleans(),
)
def test_every_demo_tool_survives_random_arguments(
    fuzzing: Fuzzing, tool: str, data: st.DataObject, well: bool, modern: bool
) -> None:
    arguments = data.draw(WELL_TYPED[tool] if well else ill_typed(tool), label="arguments")
    # globex_forecast is registered for globex only: fuzz it as globex (another subject than the bystander).
    token = fuzzing.globex_fuzzer if tool == "globex_forecast" else fuzzing.acme
    params = {"name": tool, "arguments": arguments}
    if modern:
        message = {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": modern_params(params)}
        headers = modern_headers("tools/call", params)
    else:
        message = {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": params}
        headers = {"Mcp-Session-Id": fuzzing.session(token), "MCP-Protocol-Version": HANDSHAKE_VERSION}
    raw = encode(message)
    response = fuzzing.client.post(
        fuzzing.server.mcp_url,
        content=raw,
        headers=_auth(token, {"Content-Type": "application/json", "Accept": ACCEPT, **headers}),
    )
    own, foreign = ("globex", ACME_CANARY) if token == fuzzing.globex_fuzzer else ("acme", GLOBEX_CANARY)
    check_response(response, raw, foreign_canary=foreign)
    # A refused call is a JSON-RPC error: HTTP 200 in the handshake era, its 4xx in the sessionless one.
    assert response.status_code == 200 or (modern and response.status_code in (400, 403, 404)), response.text[:300]
    body = response.json()
    event(f"{tool}: {body['error'].get('data', {}).get('code') if 'error' in body else 'ok'}")
    if "error" in body:
        code = body["error"].get("data", {}).get("code")
        assert code in (
            "invalid_arguments",
            "scope_violation",
            "not_found",
            "invalid_params",
            "storage_quota_exceeded",
        ), body
        assert not (well and tool in ("whoami", "query_crm")), f"{tool} refused well-typed arguments: {body}"
    else:
        result = body["result"]
        assert foreign not in json.dumps(result)
        if tool == "whoami":
            assert result["structuredContent"]["tenant_id"] == own


def test_fuzz_checks_catch_a_traceback_and_a_5xx() -> None:
    """Positive control: the response checks fail on the things they are meant to catch."""
    crash = httpx2.Response(500, json={"error": "boom"})
    with pytest.raises(AssertionError, match="HTTP 500"):
        check_response(crash, b"{}")
    leak = httpx2.Response(
        200, json={"jsonrpc": "2.0", "id": 1, "error": {"code": -32603, "message": 'Traceback: File "x.py"'}}
    )
    with pytest.raises(AssertionError, match="Traceback"):
        check_response(leak, b"{}")
    pydantic_text = httpx2.Response(
        200, json={"error": {"code": 1, "message": "1 validation error for CallToolRequest"}}
    )
    with pytest.raises(AssertionError, match="validation error for"):
        check_response(pydantic_text, b"{}")
    not_json = httpx2.Response(400, text="Bad Request", headers={"content-type": "text/plain"})
    with pytest.raises(AssertionError, match="text/plain"):
        check_response(not_json, b"{}")
    nan = httpx2.Response(200, content=b'{"id": NaN}', headers={"content-type": "application/json"})
    with pytest.raises(AssertionError, match="NaN"):
        check_response(nan, b"{}")
    check_response(httpx2.Response(202), b"{}")
    check_response(httpx2.Response(200, json={"jsonrpc": "2.0", "id": 1, "result": {}}), b"{}")


def test_bystander_check_catches_a_failure_and_a_leak() -> None:
    """Positive control: the bystander's check is not satisfied by any answer at all."""
    ok = {"jsonrpc": "2.0", "id": 7, "result": {"structuredContent": {"tenant_id": "globex"}}}
    assert _bystander_problem(httpx2.Response(200, json=ok), '"tenant_id":"globex"') is None
    assert _bystander_problem(httpx2.Response(429, json=ok), "globex") is not None
    error = {"jsonrpc": "2.0", "id": 7, "error": {"code": -32005, "message": "rate limited"}}
    assert _bystander_problem(httpx2.Response(200, json=error), "globex") is not None
    leaked = {"jsonrpc": "2.0", "id": 7, "result": {"content": [{"type": "text", "text": "globex acme-canary"}]}}
    assert _bystander_problem(httpx2.Response(200, json=leaked), "globex") == "acme's canary in globex's result"
