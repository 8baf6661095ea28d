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
``subscriptions/listen``, any ladder rejection. (The gate has already refused an ``Accept``
without JSON, by the SDK's rules.) The SDK then answers
it as before, so its error texts and status codes stay the SDK's own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pydantic_core
from mcp.server._streamable_http_modern import (
    _mcp_param_rejection,
    _SingleExchangeDispatchContext,
)
from mcp.server.connection import Connection
from mcp.server.lowlevel.server import Server
from mcp.server.runner import ServerRunner, modern_error_data, serve_one
from mcp.server.streamable_http import REQUEST_CANCELLED
from mcp.shared.inbound import (
    ERROR_CODE_HTTP_STATUS,
    InboundLadderRejection,
    classify_inbound_request,
    find_duplicated_routing_header,
)
from mcp.shared.jsonrpc_dispatcher import handler_exception_to_error_data, progress_token_from_params
from mcp.shared.message import ServerMessageMetadata
from mcp.shared.transport_context import TransportContext
from mcp_types import INTERNAL_ERROR, ErrorData, JSONRPCError, JSONRPCRequest
from pydantic import ValidationError
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from tenantry.core.effects import RESPONSE_WAITS, DurableStart, durable_before_response
from tenantry.core.errors import AuditUnavailable
from tenantry.server.errors import to_mcp_error

__all__ = ["SingleExchange"]

_JSON_HEADERS = (b"content-type", b"application/json")
_MAX_IN_FLIGHT = 100_000


class SingleExchange:
    """Serves one sessionless JSON-mode request the way the SDK's modern entry does, or declines.

    :param app: the low-level MCP server. :param lifespan_state: its lifespan state, read when a
        request comes (the session manager enters the lifespan once the server runs).
    """

    def __init__(self, app: Server[Any], lifespan_state: Callable[[], Any]) -> None:
        self._app = app
        self._lifespan_state = lifespan_state
        self._in_flight: dict[tuple[str, str], asyncio.Task[Any]] = {}
        self._cancelled: set[tuple[str, str]] = set()

    async def serve(self, message: Any, scope: Scope, receive: Receive, send: Send) -> bool:
        """Answer ``message`` (the parsed body of a sessionless POST). ``False``: declined, nothing
        was sent or read, and the SDK's entry must answer it."""
        if not isinstance(message, dict) or "id" not in message or message.get("method") == "subscriptions/listen":
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
        waits: list[DurableStart] = []
        RESPONSE_WAITS.set(waits)
        try:
            result = await serve_one(
                self._app, dctx, req.method, req.params, connection=connection, lifespan_state=lifespan_state
            )
            await durable_before_response(waits)
        except AuditUnavailable as exc:
            error = modern_error_data(to_mcp_error(exc))
            await _write(_error_body(req.id, error), ERROR_CODE_HTTP_STATUS.get(error.code, 200), send)
            return True
        except Exception as exc:
            error = modern_error_data(exc if await _recorded(waits) else to_mcp_error(AuditUnavailable()))
            await _write(_error_body(req.id, error), ERROR_CODE_HTTP_STATUS.get(error.code, 200), send)
            return True
        await _write({"jsonrpc": "2.0", "id": req.id, "result": result}, 200, send)
        return True

    async def serve_in_session(
        self,
        message: Any,
        protocol_header: str | None,
        session_id: str,
        connection: Connection,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> bool:
        """Answer a request on an open handshake-era session (JSON mode) through the SDK's kernel
        with the session's own connection, as its transport and session loop would: its result,
        or its error with HTTP 200, and the ``Mcp-Session-Id`` header. ``False``: declined (an
        ``initialize``, a notification, a session not initialised yet, a protocol version header
        other than the negotiated one), nothing was sent or read.

        The SDK sends nothing scoped to a request over a JSON response (no progress, no logs,
        no requests to the client): here such requests fail at once rather than wait for an
        answer that cannot come. A client's ``notifications/cancelled`` for the request goes
        through the gate to :meth:`cancel`; the request is then answered ``Request cancelled``.
        """
        if not isinstance(message, dict) or "id" not in message or message.get("method") == "initialize":
            return False
        if not connection.initialize_accepted:
            return False
        if protocol_header is not None and protocol_header != connection.protocol_version:
            return False
        try:
            req = JSONRPCRequest.model_validate(message)
        except ValidationError:
            return False
        request = Request(scope, receive)
        dctx = _SingleExchangeDispatchContext(
            transport=TransportContext(kind="streamable-http", can_send_request=False, headers=request.headers),
            request_id=req.id,
            message_metadata=ServerMessageMetadata(request_context=request),
            progress_token=progress_token_from_params(req.params),
        )
        key = (session_id, str(req.id))
        task = asyncio.current_task()
        tracked = task is not None and key not in self._in_flight and len(self._in_flight) < _MAX_IN_FLIGHT
        if tracked and task is not None:
            self._in_flight[key] = task
        runner = ServerRunner(self._app, connection, self._lifespan_state())
        body: dict[str, Any]
        absorbed = False
        waits: list[DurableStart] = []
        RESPONSE_WAITS.set(waits)
        try:
            result = await runner.on_request(dctx, req.method, req.params)
            await durable_before_response(waits)
            body = {"jsonrpc": "2.0", "id": req.id, "result": result}
        except AuditUnavailable as exc:
            body = _error_body(req.id, handler_exception_to_error_data(to_mcp_error(exc)) or _INTERNAL)
        except asyncio.CancelledError:
            if not tracked or key not in self._cancelled or task is None:
                raise
            absorbed = True
            if task.uncancel() > 0:  # another cancellation (the server stopping) is still owed
                raise
            body = _error_body(req.id, ErrorData(code=REQUEST_CANCELLED, message="Request cancelled"))
        except Exception as exc:
            failure: Exception = exc if await _recorded(waits) else to_mcp_error(AuditUnavailable())
            error = handler_exception_to_error_data(failure)
            body = _error_body(req.id, error or ErrorData(code=INTERNAL_ERROR, message="Internal server error"))
        finally:
            # Only the tracked request owns its key: another one with the same id (a client's
            # mistake) must not clear a cancellation meant for the first.
            if tracked:
                self._in_flight.pop(key, None)
                if key in self._cancelled:
                    self._cancelled.discard(key)
                    if not absorbed and task is not None:
                        task.uncancel()  # the cancel came too late to interrupt anything
        await _write(body, 200, send, (b"mcp-session-id", session_id.encode("latin-1")))
        return True

    def cancel_session(self, session_id: str) -> int:
        """The session ended (``DELETE``): stop its requests still running here, as the SDK ends
        its handlers with its transport. Returns how many."""
        keys = [key for key in self._in_flight if key[0] == session_id]
        return sum(self.cancel(*key) for key in keys)

    def cancel(self, session_id: str, request_id: Any) -> bool:
        """The client cancelled one of its requests on ``session_id``: stop it if it runs here."""
        key = (session_id, str(request_id))
        task = self._in_flight.get(key)
        if task is None or key in self._cancelled:
            return False
        self._cancelled.add(key)
        task.cancel()
        return True


_INTERNAL = ErrorData(code=INTERNAL_ERROR, message="Internal server error")


async def _recorded(waits: list[DurableStart]) -> bool:
    """Wait, before an error goes out too, for the starts its request's call made; ``False``: one
    was not recorded (the call had no effect: it is answered ``audit_unavailable``, not run)."""
    try:
        await durable_before_response(waits)
    except AuditUnavailable:
        return False
    return True


def _header_items(scope: Scope) -> list[tuple[str, str]]:
    return [(key.decode("latin-1"), value.decode("latin-1")) for key, value in scope["headers"]]


def _error_body(request_id: Any, error: ErrorData) -> dict[str, Any]:
    return JSONRPCError(jsonrpc="2.0", id=request_id, error=error).model_dump(
        mode="json", by_alias=True, exclude_none=True
    )


async def _write(body: dict[str, Any], status: int, send: Send, *extra: tuple[bytes, bytes]) -> None:
    encoded = pydantic_core.to_json(body)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [_JSON_HEADERS, (b"content-length", str(len(encoded)).encode()), *extra],
        }
    )
    await send({"type": "http.response.body", "body": encoded, "more_body": False})
