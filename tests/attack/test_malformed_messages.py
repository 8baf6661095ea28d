"""Malformed JSON-RPC requests, notifications and *responses* posted to ``/mcp``, in both protocol
eras: each gets a specific message, and nothing the SDK's validation library says (its
version, its type names, its documentation links) ever reaches the client."""

from __future__ import annotations

import json
from typing import Any

import httpx2
import pytest

from tests.support.rpc import MODERN_VERSION, LegacySession, modern_call, modern_params, post, request
from tests.support.server import RunningServer

LEAKS = (
    "validation error",
    "pydantic",
    "For further information visit",
    "errors.pydantic.dev",
    "input_value",
    "input_type",
    "JSONRPCRequest",
    "JSONRPCNotification",
    "JSONRPCResponse",
    "JSONRPCError",
    "ErrorData",
    "type=missing",
    "Traceback",
)


def assert_no_leak(response: httpx2.Response) -> None:
    text = response.text
    lowered = text.lower()
    for leak in LEAKS:
        assert leak.lower() not in lowered, f"{leak!r} in {text!r}"


def error_message(response: httpx2.Response) -> str:
    return str(response.json()["error"]["message"])


MALFORMED_RESPONSES: list[tuple[dict[str, Any], str]] = [
    ({"jsonrpc": "2.0", "result": {}}, 'a JSON-RPC response needs the "id" of the request it answers'),
    ({"jsonrpc": "2.0", "id": None, "result": {}}, 'a JSON-RPC response needs the "id" of the request it answers'),
    ({"jsonrpc": "2.0", "error": {"code": 1, "message": "x"}}, 'needs the "id" of the request it answers'),
    ({"jsonrpc": "2.0", "id": 5, "result": 5}, '"result" of a JSON-RPC response must be an object'),
    ({"jsonrpc": "2.0", "id": 5, "result": [1]}, '"result" of a JSON-RPC response must be an object'),
    ({"jsonrpc": "2.0", "id": 5, "result": None}, '"result" of a JSON-RPC response must be an object'),
    ({"jsonrpc": "2.0", "id": 5, "error": "bad"}, 'with an integer "code" and a string "message"'),
    ({"jsonrpc": "2.0", "id": 5, "error": {"code": "x", "message": "x"}}, 'an integer "code"'),
    ({"jsonrpc": "2.0", "id": 5, "error": {"code": "-32600", "message": "x"}}, 'an integer "code"'),
    ({"jsonrpc": "2.0", "id": 5, "error": {"code": 1.5, "message": "x"}}, 'an integer "code"'),
    ({"jsonrpc": "2.0", "id": 5, "error": {"code": True, "message": "x"}}, 'an integer "code"'),
    ({"jsonrpc": "2.0", "id": 5, "error": {"code": 1}}, 'a string "message"'),
    ({"jsonrpc": "2.0", "id": 5, "error": {"code": 1, "message": 7}}, 'a string "message"'),
    ({"jsonrpc": "2.0", "id": 5, "error": None}, 'with an integer "code" and a string "message"'),
    (
        {"jsonrpc": "2.0", "id": 5, "result": {}, "error": {"code": 1, "message": "x"}},
        'a JSON-RPC response has either "result" or "error", not both',
    ),
    ({"jsonrpc": "2.0", "id": 5.5, "result": {}}, '"id" must be a string or an integer'),
    ({"jsonrpc": "2.0", "id": True, "result": {}}, '"id" must be a string or an integer'),
    ({"jsonrpc": "2.0", "id": 5}, "neither a request, a notification nor a response"),
]
MALFORMED_REQUESTS: list[tuple[dict[str, Any], str]] = [
    ({"jsonrpc": "2.0", "id": 1, "method": None}, '"method" must be a string'),
    ({"jsonrpc": "2.0", "method": ["tools/list"]}, '"method" must be a string'),
    ({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": "x"}, '"params" must be an object'),
    ({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": None}, '"params" must be an object'),
    ({"jsonrpc": "2.0", "method": "notifications/initialized", "params": 3}, '"params" must be an object'),
    ({"jsonrpc": "2.0", "id": [1], "method": "tools/list"}, '"id" must be a string or an integer'),
    ({"jsonrpc": "1.0", "id": 1, "method": "tools/list"}, '"jsonrpc": "2.0"'),
    ({"jsonrpc": 2.0, "id": 1, "method": "tools/list"}, '"jsonrpc": "2.0"'),
    ({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": 5}}, '"params.name" as a string'),
    (
        {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "whoami", "arguments": [1]}},
        '"params.arguments" as an object',
    ),
    ({"jsonrpc": "2.0", "id": 1, "method": "resources/read", "params": {"uri": None}}, '"params.uri" as a string'),
]


@pytest.fixture(scope="module")
def legacy(server: RunningServer, acme_token: str) -> LegacySession:
    return LegacySession(server.mcp_url, acme_token)


@pytest.mark.parametrize(("message", "expected"), MALFORMED_RESPONSES + MALFORMED_REQUESTS)
def test_malformed_messages_on_a_handshake_session_get_a_specific_error(
    server: RunningServer, legacy: LegacySession, message: dict[str, Any], expected: str
) -> None:
    response = post(server.mcp_url, message, token=legacy.token, headers=legacy.headers())
    assert_no_leak(response)
    assert response.status_code == 400, response.text
    assert expected in error_message(response)
    assert response.json()["error"]["data"]["code"] in ("invalid_request", "invalid_params")


@pytest.mark.parametrize(("message", "expected"), MALFORMED_RESPONSES + MALFORMED_REQUESTS)
def test_malformed_messages_without_a_session_get_a_specific_error(
    server: RunningServer, acme_token: str, message: dict[str, Any], expected: str
) -> None:
    for headers in ({"MCP-Protocol-Version": MODERN_VERSION}, {}):  # sessionless era; handshake era, no session
        response = post(server.mcp_url, message, token=acme_token, headers=headers)
        assert_no_leak(response)
        assert response.status_code == 400, response.text
        assert expected in error_message(response)


@pytest.mark.parametrize(
    "message",
    [
        {"jsonrpc": "2.0", "id": 5, "result": {}},
        {"jsonrpc": "2.0", "id": "srv-1", "result": {"action": "accept", "content": {}}},
        {"jsonrpc": "2.0", "id": 5, "error": {"code": -32600, "message": "declined"}},
        {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "Parse error"}},
    ],
)
def test_a_well_formed_response_in_the_sessionless_era_is_unexpected(
    server: RunningServer, acme_token: str, message: dict[str, Any]
) -> None:
    response = post(server.mcp_url, message, token=acme_token, headers={"MCP-Protocol-Version": MODERN_VERSION})
    assert_no_leak(response)
    assert response.status_code == 400
    assert error_message(response) == (
        "unexpected JSON-RPC response: this server has no request with that id outstanding"
    )


@pytest.mark.parametrize(
    "message",
    [
        {"jsonrpc": "2.0", "id": 5, "result": {}},
        {"jsonrpc": "2.0", "id": 5, "result": {"action": "decline"}, "extra": 1},
        {"jsonrpc": "2.0", "id": 5, "error": {"code": -1, "message": "no", "data": {"x": 1}}},
        {"jsonrpc": "2.0", "id": 10**20, "error": {"code": 10**20, "message": "big"}},
    ],
)
def test_a_well_formed_response_on_a_handshake_session_still_reaches_the_sdk(
    server: RunningServer, legacy: LegacySession, message: dict[str, Any]
) -> None:
    """Positive control: the SDK takes responses to its own requests (elicitation, sampling, roots)."""
    response = post(server.mcp_url, message, token=legacy.token, headers=legacy.headers())
    assert_no_leak(response)
    assert response.status_code == 202, response.text
    assert legacy.call("tools/call", {"name": "whoami", "arguments": {}}).status_code == 200


@pytest.mark.parametrize(
    "raw",
    [
        b'{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":5}}',
        b'{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"cursor":5}}',
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"whoami","arguments":{},"_meta":"x"}}',
        b'{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"not a uri"}}',
        b'{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"p","arguments":{"a":1}}}',
        b'{"jsonrpc":"2.0","id":1,"method":"logging/setLevel","params":{"level":"loud"}}',
        b'{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":5}}',
        b'{"jsonrpc":"2.0","id":1,"method":"no/such/method"}',
        b'{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":{}}}',
        b'{"jsonrpc":"2.0","method":"notifications/progress","params":{"progress":"x"}}',
    ],
)
def test_requests_with_bad_params_never_leak_validator_text_in_either_era(
    server: RunningServer, legacy: LegacySession, raw: bytes
) -> None:
    legacy_response = post(server.mcp_url, None, token=legacy.token, headers=legacy.headers(), raw=raw)
    assert_no_leak(legacy_response)
    message = json.loads(raw)
    if "id" in message:
        if isinstance(message.get("params", {}).get("_meta", {}), dict):
            message["params"] = modern_params(message.get("params"))
        headers = {"MCP-Protocol-Version": MODERN_VERSION, "Mcp-Method": message["method"]}
        modern = post(server.mcp_url, message, token=legacy.token, headers=headers)
        assert_no_leak(modern)
        bare = post(server.mcp_url, None, token=legacy.token, headers=headers, raw=raw)
        assert_no_leak(bare)


def test_a_genuine_call_in_both_eras_still_works(server: RunningServer, legacy: LegacySession) -> None:
    """Positive control beside the refusals above."""
    whoami = {"name": "whoami", "arguments": {}}
    assert legacy.call("tools/call", whoami).json()["result"]["structuredContent"]["tenant_id"] == "acme"
    modern = modern_call(server.mcp_url, legacy.token, "tools/call", whoami)
    assert modern.json()["result"]["structuredContent"]["tenant_id"] == "acme"
    assert request("tools/list")["method"] == "tools/list"
