"""Cheap HTTP-level refusals that run before any MCP machinery.

``OriginGuard`` stops DNS-rebinding and cross-site browser requests (foreign ``Origin`` ->
403, unexpected ``Host`` -> 421). ``RequestGuard`` refuses what the MCP layer should never
have to parse: wrong method or content type, oversized bodies, invalid or deeply nested
JSON, batches. Every refusal is a JSON-RPC error body with a specific message.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tenantry.core.errors import (
    OriginNotAllowed,
    PayloadTooLarge,
    RequestRejected,
    TenantryError,
    UnsupportedMediaType,
)
from tenantry.server.errors import error_response

__all__ = ["OriginGuard", "RequestGuard", "json_depth_exceeds"]


class _BadHost(RequestRejected):
    code = "misdirected_request"
    http_status = 421
    default_message = "Host header not allowed"


class _MethodNotAllowed(RequestRejected):
    code = "method_not_allowed"
    http_status = 405
    default_message = "Method not allowed on /mcp: use POST, GET or DELETE"


class InvalidParams(RequestRejected):
    code = "invalid_params"
    jsonrpc_code = -32602


class _ParseError(RequestRejected):
    code = "parse_error"
    jsonrpc_code = -32700


def _host_matches(host: str, allowed: str) -> bool:
    if allowed.endswith(":*"):
        return host == allowed[:-2] or host.startswith(allowed[:-1])
    return host == allowed


class OriginGuard:
    """Validates ``Host`` and ``Origin`` on every request it wraps.

    :param allowed_hosts: ``host[:port]`` values, ``host:*`` for any port.
    :param allowed_origins: ``scheme://host[:port]`` origins, ``scheme://host:*`` for any port.
    A request without ``Origin`` (any non-browser client) passes the origin check.
    """

    def __init__(self, app: ASGIApp, *, allowed_hosts: Iterable[str], allowed_origins: Iterable[str]) -> None:
        self.app = app
        self._hosts = tuple(allowed_hosts)
        self._origins = tuple(o.rstrip("/") for o in allowed_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        host = headers.get("host", "")
        if not any(_host_matches(host, allowed) for allowed in self._hosts):
            await error_response(_BadHost())(scope, receive, send)
            return
        origin = headers.get("origin")
        if origin is not None and not any(_host_matches(origin.rstrip("/"), o) for o in self._origins):
            await error_response(OriginNotAllowed())(scope, receive, send)
            return
        await self.app(scope, receive, send)


def json_depth_exceeds(body: bytes, limit: int) -> bool:
    """Whether the JSON text nests arrays/objects deeper than ``limit`` (strings are skipped).

    Counting brackets is a C-speed pre-check: a body with at most ``limit`` opening
    brackets cannot nest deeper, which is the common case.
    """
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    depth = 0
    in_string = False
    escaped = False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            if depth > limit:
                return True
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return False


class RequestGuard:
    """Validates the envelope of ``/mcp`` requests, then replays the body downstream."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, max_depth: int) -> None:
        self.app = app
        self._max_body = max_body_bytes
        self._max_depth = max_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        if method in ("GET", "DELETE"):
            await self.app(scope, receive, send)
            return
        if method != "POST":
            await error_response(_MethodNotAllowed(), headers={"Allow": "POST, GET, DELETE"})(scope, receive, send)
            return
        try:
            body = await self._read_checked_body(scope, receive)
        except TenantryError as exc:
            await error_response(exc)(scope, receive, send)
            return
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _read_checked_body(self, scope: Scope, receive: Receive) -> bytes:
        headers = Headers(scope=scope)
        content_type = headers.get("content-type", "")
        if content_type.split(";")[0].strip().lower() != "application/json":
            raise UnsupportedMediaType("Content-Type must be application/json")
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self._max_body:
            raise PayloadTooLarge(f"Request body larger than {self._max_body} bytes")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                raise RequestRejected("client disconnected")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._max_body:
                raise PayloadTooLarge(f"Request body larger than {self._max_body} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        _check_envelope(body, self._max_depth)
        return body


def _check_envelope(body: bytes, max_depth: int) -> None:
    if json_depth_exceeds(body, max_depth):
        raise RequestRejected(f"JSON nested deeper than {max_depth} levels")
    try:
        message: Any = json.loads(body)
    except (ValueError, RecursionError):
        raise _ParseError("Parse error: the body is not valid JSON") from None
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
    if "method" not in message and "result" not in message and "error" not in message:
        raise RequestRejected("the message is neither a request, a notification nor a response")
    _check_params(message.get("method"), message.get("params") or {})


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


# A response helper for 404s on unknown paths, kept here with the other early refusals.
def not_found_response() -> Response:
    return Response(
        json.dumps({"error": "not_found", "error_description": "No such endpoint"}),
        status_code=404,
        media_type="application/json",
    )
