"""Bad input gets a specific 4xx or JSON-RPC error, never a traceback, and others keep being served."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx2
import pytest

from tests.support.rpc import ACCEPT, LegacySession, modern_call, post, request
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

    response = httpx2.post(
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
    put = httpx2.put(server.mcp_url, headers={"Authorization": f"Bearer {acme_token}"}, content=b"{}")
    assert_clean_error(put, 405, "method_not_allowed")


def test_unknown_paths_are_json_404(server: RunningServer) -> None:
    response = httpx2.get(server.base_url + "/admin/../../etc/passwd")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
