"""Bad input gets a specific 4xx or JSON-RPC error, never a traceback, and others keep being served."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx2
import pytest

from tests.support import web
from tests.support.rpc import (
    ACCEPT,
    MODERN_VERSION,
    LegacySession,
    modern_call,
    modern_headers,
    modern_params,
    post,
    request,
)
from tests.support.server import RunningServer


@pytest.fixture(autouse=True)
def others_keep_being_served(server: RunningServer, globex_token: str) -> Iterator[None]:
    yield
    response = modern_call(server.mcp_url, globex_token, "tools/call", {"name": "whoami", "arguments": {}})
    assert response.status_code == 200
    assert response.json()["result"]["structuredContent"]["tenant_id"] == "globex"


def assert_clean_error(response: httpx2.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert "Traceback" not in response.text and 'File "' not in response.text
    body = response.json()
    if code is not None:
        assert body["error"]["data"]["code"] == code
    return body


def test_malformed_json_is_a_parse_error(server: RunningServer, acme_token: str) -> None:
    body = assert_clean_error(post(server.mcp_url, None, token=acme_token, raw=b'{"jsonrpc": "2.0", "method": '), 400)
    assert body["error"]["code"] == -32700


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"[]", "batches"),
        (b'[{"jsonrpc":"2.0","id":1,"method":"tools/list"}]', "batches"),
        (b'"just a string"', "message object"),
        (b'{"id":1,"method":"tools/list"}', '"jsonrpc": "2.0"'),
        (b'{"jsonrpc":"2.0","id":1,"method":42}', '"method" must be a string'),
        (b'{"jsonrpc":"2.0","id":1,"method":"tools/list","params":[1]}', '"params" must be an object'),
        (b'{"jsonrpc":"2.0","id":{"x":1},"method":"tools/list"}', '"id" must be'),
        (b'{"jsonrpc":"2.0"}', "neither a request"),
    ],
)
def test_invalid_jsonrpc_envelopes_get_specific_errors(
    server: RunningServer, acme_token: str, raw: bytes, fragment: str
) -> None:
    body = assert_clean_error(post(server.mcp_url, None, token=acme_token, raw=raw), 400, "invalid_request")
    assert fragment in body["error"]["message"]


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml", ""])
def test_wrong_content_type_is_415(server: RunningServer, acme_token: str, content_type: str) -> None:
    response = post(
        server.mcp_url,
        None,
        token=acme_token,
        raw=json.dumps(request("tools/list")).encode(),
        content_type=content_type,
    )
    assert_clean_error(response, 415, "unsupported_media_type")


def test_oversized_body_is_413(server: RunningServer, acme_token: str) -> None:
    big = request("tools/call", {"name": "whoami", "arguments": {"x": "a" * (1024 * 1024 + 10)}})
    assert_clean_error(post(server.mcp_url, big, token=acme_token), 413, "payload_too_large")


def test_oversized_chunked_body_without_length_is_413(server: RunningServer, acme_token: str) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"x":"'
        for _ in range(20):
            yield b"a" * 65536
        yield b'"}}'

    response = web.post(
        server.mcp_url,
        content=chunks(),
        headers={"Authorization": f"Bearer {acme_token}", "Content-Type": "application/json", "Accept": ACCEPT},
    )
    assert_clean_error(response, 413, "payload_too_large")


def test_deep_nesting_is_refused(server: RunningServer, acme_token: str) -> None:
    raw = (
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"whoami","arguments":{"x":'
        + b"[" * 5000
        + b"]" * 5000
        + b"}}}"
    )
    body = assert_clean_error(post(server.mcp_url, None, token=acme_token, raw=raw), 400, "invalid_request")
    assert "nested deeper" in body["error"]["message"]


def test_unknown_method_is_method_not_found(server: RunningServer, acme_token: str) -> None:
    session = LegacySession(server.mcp_url, acme_token)
    response = session.call("tenants/steal", {})
    assert response.status_code == 200
    assert response.json()["error"]["code"] == -32601


def test_unknown_method_sessionless(server: RunningServer, acme_token: str) -> None:
    response = modern_call(server.mcp_url, acme_token, "admin/everything", {})
    assert "Traceback" not in response.text
    assert response.json()["error"]["code"] in (-32601, -32602)


@pytest.mark.parametrize(
    ("arguments", "fragment"),
    [
        ({"filter": 42}, "filter"),
        ({"limit": "many"}, "limit"),
        ({"limit": 10_000}, "limit"),
        ({"filter": {"$ne": None}}, "filter"),
        ({"unexpected": 1}, "unexpected"),
    ],
)
def test_wrong_argument_types_are_refused_before_the_tool_runs(
    server: RunningServer, acme_token: str, arguments: dict, fragment: str
) -> None:
    response = modern_call(server.mcp_url, acme_token, "tools/call", {"name": "query_crm", "arguments": arguments})
    body = response.json()
    assert body["error"]["data"]["code"] == "invalid_arguments"
    assert fragment in body["error"]["message"]
    assert "Traceback" not in response.text


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"name": "query_crm", "arguments": [1, 2]}, '"params.arguments" as an object'),
        ({"nam": "query_crm"}, '"params.name" as a string'),
        ({"name": 7}, '"params.name" as a string'),
    ],
)
def test_malformed_tool_call_params_are_refused_clearly(
    server: RunningServer, acme_token: str, params: dict, fragment: str
) -> None:
    response = post(server.mcp_url, request("tools/call", params), token=acme_token)
    body = assert_clean_error(response, 400, "invalid_params")
    assert fragment in body["error"]["message"]


def test_get_without_session_and_other_methods(server: RunningServer, acme_token: str) -> None:
    put = web.put(server.mcp_url, headers={"Authorization": f"Bearer {acme_token}"}, content=b"{}")
    assert_clean_error(put, 405, "method_not_allowed")


def test_unknown_paths_are_json_404(server: RunningServer) -> None:
    response = web.get(server.base_url + "/admin/../../etc/passwd")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


# Found by tests/attack/test_fuzz.py: the SDK answered these itself, with an empty body or with
# pydantic's error text. The gate now refuses them first, with a JSON-RPC error body.


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_get_and_delete_in_the_sessionless_era_are_405_with_a_json_body(
    server: RunningServer, acme_token: str, method: str
) -> None:
    response = web.request(
        method,
        server.mcp_url,
        headers={"Authorization": f"Bearer {acme_token}", "MCP-Protocol-Version": MODERN_VERSION, "Accept": ACCEPT},
    )
    body = assert_clean_error(response, 405, "method_not_allowed")
    assert "POST only" in body["error"]["message"]
    assert response.headers["allow"] == "POST"


@pytest.mark.parametrize("accept", ["text/event-stream", "text/html", ""])
@pytest.mark.parametrize("modern", [True, False], ids=["sessionless", "handshake"])
def test_an_accept_header_without_json_is_406_with_a_json_body(
    server: RunningServer, acme_token: str, accept: str, modern: bool
) -> None:
    if modern:
        message = request("tools/list", modern_params({}))
        headers = {**modern_headers("tools/list"), "Accept": accept}
    else:
        message = request("tools/list", {})
        headers = {**LegacySession(server.mcp_url, acme_token).headers(), "Accept": accept}
    assert_clean_error(post(server.mcp_url, message, token=acme_token, headers=headers), 406, "not_acceptable")


@pytest.mark.parametrize("accept", ["application/json", "*/*", "application/*, text/*"])
def test_an_accept_header_allowing_json_is_served(server: RunningServer, acme_token: str, accept: str) -> None:
    headers = {**modern_headers("tools/list"), "Accept": accept}
    response = post(server.mcp_url, request("tools/list", modern_params({})), token=acme_token, headers=headers)
    assert response.status_code == 200, response.text
    assert "whoami" in {tool["name"] for tool in response.json()["result"]["tools"]}


def test_listen_without_an_event_stream_accept_is_406_with_a_json_body(server: RunningServer, acme_token: str) -> None:
    headers = {**modern_headers("subscriptions/listen"), "Accept": "application/json"}
    response = post(
        server.mcp_url, request("subscriptions/listen", modern_params({})), token=acme_token, headers=headers
    )
    body = assert_clean_error(response, 406, "not_acceptable")
    assert "text/event-stream" in body["error"]["message"]


@pytest.mark.parametrize(
    "message",
    [
        {"jsonrpc": "2.0", "id": None, "result": {}},
        {"jsonrpc": "2.0", "id": 1, "result": 5},
        {"jsonrpc": "2.0", "id": 1, "error": {"code": "x"}},
    ],
)
def test_a_malformed_response_message_is_refused_without_pydantic_text(
    server: RunningServer, acme_token: str, message: dict
) -> None:
    session = LegacySession(server.mcp_url, acme_token)
    response = post(server.mcp_url, message, token=acme_token, headers=session.headers())
    body = assert_clean_error(response, 400, "invalid_request")
    assert "pydantic" not in response.text and "validation error" not in response.text.lower()
    assert "JSON-RPC response" in body["error"]["message"]  # a specific message of our own


def test_a_well_formed_response_message_is_accepted(server: RunningServer, acme_token: str) -> None:
    session = LegacySession(server.mcp_url, acme_token)
    response = post(
        server.mcp_url, {"jsonrpc": "2.0", "id": 99, "result": {}}, token=acme_token, headers=session.headers()
    )
    assert response.status_code == 202, response.text
