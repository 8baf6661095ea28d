"""Cheap HTTP-level refusals that run before any MCP machinery.

:class:`HostOriginPolicy` stops DNS-rebinding and cross-site browser requests (foreign
``Origin`` -> 403, unexpected ``Host`` -> 421). :func:`read_checked_body` refuses what the
MCP layer should never have to parse: wrong content type, oversized bodies, invalid or
deeply nested JSON, batches, malformed envelopes, an ``Accept`` header the response cannot
satisfy. :func:`check_http_method` refuses what the era does not serve (the sessionless era is
POST only). The SDK answers some of these itself with an empty body; refusing them here first
gives every refusal a JSON-RPC error body. Every refusal is a
:class:`~tenantry.core.errors.TenantryError` with a specific, caller-safe message.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable
from itertools import accumulate
from typing import Any

import anyio
import pydantic_core
from mcp_types import jsonrpc_message_adapter
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from pydantic import ValidationError
from starlette.types import Receive

from tenantry.core.errors import (
    OriginNotAllowed,
    PayloadTooLarge,
    RequestRejected,
    RequestTimeout,
    TenantryError,
    UnsupportedMediaType,
)
from tenantry.server.headers import RequestHeaders

__all__ = [
    "HostOriginPolicy",
    "MethodNotAllowed",
    "NotAcceptable",
    "InvalidParams",
    "check_http_method",
    "accepted_types",
    "read_checked_body",
    "read_checked_message",
    "check_envelope",
    "json_depth_exceeds",
]


class MisdirectedRequest(RequestRejected):
    code = "misdirected_request"
    http_status = 421
    default_message = "Host header not allowed"


class MethodNotAllowed(RequestRejected):
    code = "method_not_allowed"
    http_status = 405
    default_message = "Method not allowed on /mcp: use POST, GET or DELETE"


class NotAcceptable(RequestRejected):
    code = "not_acceptable"
    http_status = 406
    default_message = "Accept must include application/json (and text/event-stream when the server streams)"


class InvalidParams(RequestRejected):
    code = "invalid_params"
    jsonrpc_code = -32602


class ParseError(RequestRejected):
    code = "parse_error"
    jsonrpc_code = -32700


def _matches(value: str, allowed: str) -> bool:
    """Exact match, or ``prefix:*`` for any port."""
    if allowed.endswith(":*"):
        return value == allowed[:-2] or value.startswith(allowed[:-1])
    return value == allowed


class HostOriginPolicy:
    """Which ``Host`` and ``Origin`` values a request may carry.

    :param allowed_hosts: ``host[:port]`` values, ``host:*`` for any port.
    :param allowed_origins: ``scheme://host[:port]`` origins, ``scheme://host:*`` for any port.
    A request without ``Origin`` (any non-browser client) passes the origin check.
    """

    def __init__(self, *, allowed_hosts: Iterable[str], allowed_origins: Iterable[str]) -> None:
        # Host names and URL schemes are case-insensitive (RFC 3986 3.1, 3.2.2).
        self._hosts = tuple(h.lower() for h in allowed_hosts)
        self._origins = tuple(o.rstrip("/").lower() for o in allowed_origins)

    def refusal(self, headers: RequestHeaders) -> TenantryError | None:
        host = (headers.get("host") or "").lower()
        if not any(_matches(host, allowed) for allowed in self._hosts):
            return MisdirectedRequest()
        origin = headers.get("origin")
        if origin is not None and not any(_matches(origin.rstrip("/").lower(), o) for o in self._origins):
            return OriginNotAllowed()
        return None


_OPENERS_AS_ONE = bytes.maketrans(b"{}", b"[]")
_ALL_BUT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")
_STEPS = bytes.maketrans(b"[]", b"\x01\xff")  # as signed bytes: +1 and -1
_PAIR_PASSES = 3


def json_depth_exceeds(body: bytes, limit: int) -> bool:
    """Whether the JSON text nests arrays/objects deeper than ``limit`` (strings are skipped).

    Every step runs at C speed, none byte by byte in Python on the event loop:

    * a body with at most ``limit`` opening brackets cannot nest deeper (the common case);
    * else the string literals are cut out (escaped backslashes, then escaped quotes, then
      everything between quotes), so that brackets in text, such as a code snippet's, count
      for nothing, and all brackets are made ``[`` and ``]``;
    * a few passes remove every empty pair, each of which lowers the deepest nesting by exactly
      one (a list of records shrinks to almost nothing);
    * what is left is summed as +1 / -1 steps by ``accumulate``.

    Exact for valid JSON; what is not valid JSON is refused by the parser whatever this answers.
    """
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    unescaped = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    structure = b"".join(unescaped.split(b'"')[0::2])
    brackets = structure.translate(_OPENERS_AS_ONE, _ALL_BUT_BRACKETS)
    for _ in range(_PAIR_PASSES):
        if brackets.count(b"[") <= limit:
            return False
        if b"[" * (limit + 1) in brackets:
            return True
        fewer = brackets.replace(b"[]", b"")
        if len(fewer) == len(brackets):
            break
        brackets, limit = fewer, limit - 1
    return max(accumulate(array("b", brackets.translate(_STEPS))), default=0) > limit


def check_http_method(method: str, *, handshake_era: bool) -> None:
    """Refuse an HTTP method ``/mcp`` does not serve: anything but POST, GET and DELETE, and in the
    sessionless era anything but POST (there is no session to stream from or to close).

    :raises MethodNotAllowed:
    """
    if method == "POST":
        return
    if not handshake_era:
        raise MethodNotAllowed(f"Method not allowed on /mcp: the 2026-07-28 protocol uses POST only, not {method[:16]}")
    if method not in ("GET", "DELETE"):
        raise MethodNotAllowed()


def accepted_types(headers: RequestHeaders) -> tuple[bool, bool]:
    """Whether ``Accept`` allows JSON and an event stream (the SDK's rules, wildcards included)."""
    types = {part.split(";")[0].strip().lower() for part in (headers.get("accept") or "").split(",")}
    anything = "*/*" in types
    return anything or bool(types & {"application/json", "application/*"}), anything or bool(
        types & {"text/event-stream", "text/*"}
    )


async def read_checked_body(
    receive: Receive,
    headers: RequestHeaders,
    *,
    max_bytes: int,
    max_depth: int,
    within: float | None = None,
    sse_responses: bool = False,
) -> bytes:
    """Read a POST body, refusing it as soon as a rule is broken (see :func:`read_checked_message`)."""
    body, _ = await read_checked_message(
        receive, headers, max_bytes=max_bytes, max_depth=max_depth, within=within, sse_responses=sse_responses
    )
    return body


async def read_checked_message(
    receive: Receive,
    headers: RequestHeaders,
    *,
    max_bytes: int,
    max_depth: int,
    within: float | None = None,
    sse_responses: bool = False,
) -> tuple[bytes, dict[str, Any]]:
    """Read a POST body, refusing it as soon as a rule is broken; the body and its parsed message.

    :param within: seconds the whole body may take to arrive (a client that trickles it
        must not hold the request for ever).
    :param sse_responses: the server answers with event streams, so ``Accept`` must allow one.
    :raises UnsupportedMediaType, NotAcceptable, PayloadTooLarge, RequestTimeout, ParseError, RequestRejected,
        InvalidParams:
    """
    content_type = headers.get("content-type") or ""
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise UnsupportedMediaType("Content-Type must be application/json")
    json_ok, sse_ok = accepted_types(headers)
    if not json_ok or (sse_responses and not sse_ok):
        raise NotAcceptable()
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"Request body larger than {max_bytes} bytes")
    if within is None:
        body = await _read_body(receive, max_bytes)
    else:
        arrived: bytes | None = None
        with anyio.move_on_after(within):
            arrived = await _read_body(receive, max_bytes)
        if arrived is None:
            raise RequestTimeout(f"the request body did not arrive within {within:g}s")
        body = arrived
    version = headers.get("mcp-protocol-version")
    sessionless = version is not None and version not in HANDSHAKE_PROTOCOL_VERSIONS
    message = check_envelope(body, max_depth, sessionless=sessionless)
    if message.get("method") == "subscriptions/listen" and not sse_ok and sessionless:
        raise NotAcceptable("subscriptions/listen answers with an event stream: Accept must include text/event-stream")
    return body, message


async def _read_body(receive: Receive, max_bytes: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise RequestRejected("client disconnected")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(f"Request body larger than {max_bytes} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def check_envelope(body: bytes, max_depth: int, *, sessionless: bool = False) -> dict[str, Any]:
    """Refuse a body that is not one well-formed JSON-RPC message (specific messages); return it.

    Everything that passes is a message the SDK's own envelope model accepts, so its validation
    dump (library versions, internal type names) never reaches a client.

    :param sessionless: the request is of the 2026-07-28 era, where the server never sends a
        request of its own, so no response from the client can be expected.
    """
    if json_depth_exceeds(body, max_depth):
        raise RequestRejected(f"JSON nested deeper than {max_depth} levels")
    try:
        message: Any = pydantic_core.from_json(body)  # several times cheaper than json.loads here
    except (ValueError, RecursionError):
        raise ParseError("Parse error: the body is not valid JSON") from None
    if isinstance(message, list):
        raise RequestRejected("JSON-RPC batches are not supported; send one message per request")
    if not isinstance(message, dict):
        raise RequestRejected("the body must be a JSON-RPC message object")
    if message.get("jsonrpc") != "2.0":
        raise RequestRejected('the message must have "jsonrpc": "2.0"')
    if "method" in message and not isinstance(message["method"], str):
        raise RequestRejected('"method" must be a string')
    if "params" in message and not isinstance(message["params"], dict):
        raise RequestRejected('"params" must be an object')
    request_id = message.get("id")
    if request_id is not None and (isinstance(request_id, bool) or not isinstance(request_id, str | int)):
        raise RequestRejected('"id" must be a string or an integer')
    if "method" not in message:
        _check_response(message, sessionless=sessionless)
        return message
    _check_params(message.get("method"), message.get("params") or {})
    return message


def _check_response(message: dict[str, Any], *, sessionless: bool) -> None:
    """A message without ``method`` must be a well-formed response (JSON-RPC 2.0 section 5).

    Handshake-era clients legitimately post responses to the server's own requests
    (elicitation, sampling, roots) on their session; those pass to the SDK unchanged.
    """
    has_result, has_error = "result" in message, "error" in message
    if not has_result and not has_error:
        raise RequestRejected("the message is neither a request, a notification nor a response")
    if has_result and has_error:
        raise RequestRejected('a JSON-RPC response has either "result" or "error", not both')
    if "id" not in message or (has_result and message["id"] is None):
        raise RequestRejected('a JSON-RPC response needs the "id" of the request it answers')
    if has_result and not isinstance(message["result"], dict):
        raise RequestRejected('"result" of a JSON-RPC response must be an object')
    if has_error:
        error = message["error"]
        code = error.get("code") if isinstance(error, dict) else None
        if not isinstance(code, int) or isinstance(code, bool) or not isinstance(error.get("message"), str):
            raise RequestRejected(
                '"error" of a JSON-RPC response must be an object with an integer "code" and a string "message"'
            )
    if sessionless:
        raise RequestRejected("unexpected JSON-RPC response: this server has no request with that id outstanding")
    # Whatever else the SDK's envelope model would refuse gets a fixed message, never pydantic's text.
    try:
        jsonrpc_message_adapter.validate_python(message, by_name=False)
    except ValidationError:
        raise RequestRejected(
            'a JSON-RPC response needs an "id" (a string or an integer) and a "result" object, or an "error" '
            'object with an integer "code" and a string "message"'
        ) from None


_NAMED_PARAMS = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}


def _check_params(method: object, params: dict[str, Any]) -> None:
    """Specific messages for the parameters clients most often get wrong (the SDK's are generic)."""
    key = _NAMED_PARAMS.get(method) if isinstance(method, str) else None
    if key is None:
        return
    if not isinstance(params.get(key), str):
        raise InvalidParams(f'{method} needs "params.{key}" as a string')
    if "arguments" in params and params["arguments"] is not None and not isinstance(params["arguments"], dict):
        raise InvalidParams(f'{method} needs "params.arguments" as an object')
