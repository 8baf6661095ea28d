"""Sessionless (2026-07-28) requests in JSON mode, answered in the gate's own task.

The SDK's modern entry (``handle_modern_request``, private to the pinned ``mcp``) first
re-does what the gate has just done: the Host/Origin and content-type checks, reading the
body and parsing it again. Then it runs the inbound ladder and the kernel, and serialises
the reply through a second model and ``json.dumps``. This module runs the same ladder on the
message the gate already parsed: the envelope model, duplicated routing headers, the inbound
classifier and the ``Mcp-Param-*`` check. It uses the same kernel (``serve_one``, so the
SDK's method validation, its middleware with the ``requestState`` boundary, and its result
shaping all apply), and it encodes the reply once.

What it does not answer the same way goes to the SDK's entry unchanged: a notification, a
``subscriptions/listen``, any ladder rejection, an SSE-only ``Accept``. The SDK then answers
it as before, so its error texts and status codes stay the SDK's own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pydantic_core
from mcp.server._streamable_http_modern import (
    _mcp_param_rejection,
    _SingleExchangeDispatchContext,
)
from mcp.server.connection import Connection
from mcp.server.lowlevel.server import Server
from mcp.server.runner import modern_error_data, serve_one
from mcp.shared.inbound import (
    ERROR_CODE_HTTP_STATUS,
    InboundLadderRejection,
    classify_inbound_request,
    find_duplicated_routing_header,
)
from mcp.shared.jsonrpc_dispatcher import progress_token_from_params
from mcp.shared.message import ServerMessageMetadata
from mcp.shared.transport_context import TransportContext
from mcp_types import JSONRPCError, JSONRPCRequest
from pydantic import ValidationError
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

__all__ = ["SingleExchange"]

_JSON_HEADERS = (b"content-type", b"application/json")


def _accepts_json(accept: str) -> bool:
    """``check_accept_headers``'s JSON half (RFC 7231 wildcards), on the raw header value."""
    for part in accept.split(","):
        media = part.split(";", 1)[0].strip().lower()
        if media in ("application/json", "application/*", "*/*"):
            return True
    return False


class SingleExchange:
    """Serves one sessionless JSON-mode request the way the SDK's modern entry does, or declines.

    :param app: the low-level MCP server. :param lifespan_state: its lifespan state, read when a
        request comes (the session manager enters the lifespan once the server runs).
    """

    def __init__(self, app: Server[Any], lifespan_state: Callable[[], Any]) -> None:
        self._app = app
        self._lifespan_state = lifespan_state

    async def serve(self, message: Any, accept: str, scope: Scope, receive: Receive, send: Send) -> bool:
        """Answer ``message`` (the parsed body of a sessionless POST). ``False``: declined, nothing
        was sent or read, and the SDK's entry must answer it."""
        if not isinstance(message, dict) or "id" not in message or message.get("method") == "subscriptions/listen":
            return False
        if not _accepts_json(accept):
            return False
        try:
            req = JSONRPCRequest.model_validate(message)
        except ValidationError:
            return False
        if find_duplicated_routing_header(_header_items(scope)) is not None:
            return False
        request = Request(scope, receive)
        verdict = classify_inbound_request(message, headers=dict(request.headers))
        if isinstance(verdict, InboundLadderRejection):
            return False
        lifespan_state = self._lifespan_state()
        if await _mcp_param_rejection(self._app, request, req, verdict, lifespan_state) is not None:
            return False
        connection = Connection.from_envelope(
            verdict.protocol_version, verdict.client_info, verdict.client_capabilities
        )
        dctx = _SingleExchangeDispatchContext(
            transport=TransportContext(kind="streamable-http", can_send_request=False, headers=request.headers),
            request_id=req.id,
            message_metadata=ServerMessageMetadata(request_context=request),
            progress_token=progress_token_from_params(req.params),
        )
        try:
            result = await serve_one(
                self._app, dctx, req.method, req.params, connection=connection, lifespan_state=lifespan_state
            )
        except Exception as exc:
            error = JSONRPCError(jsonrpc="2.0", id=req.id, error=modern_error_data(exc))
            status = ERROR_CODE_HTTP_STATUS.get(error.error.code, 200)
            await _write(error.model_dump(mode="json", by_alias=True, exclude_none=True), status, send)
            return True
        await _write({"jsonrpc": "2.0", "id": req.id, "result": result}, 200, send)
        return True


def _header_items(scope: Scope) -> list[tuple[str, str]]:
    return [(key.decode("latin-1"), value.decode("latin-1")) for key, value in scope["headers"]]


async def _write(body: dict[str, Any], status: int, send: Send) -> None:
    encoded = pydantic_core.to_json(body)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [_JSON_HEADERS, (b"content-length", str(len(encoded)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": encoded, "more_body": False})
