"""The ``/mcp`` gate: one ASGI step in front of the SDK that runs every HTTP-level check in order.

1. ``Host``/``Origin`` policy (before any token work),
2. bearer authentication, tenant existence and kill switch, the tenant's request budget,
3. session ownership for handshake-era requests carrying ``Mcp-Session-Id``,
4. method, content type, size and JSON envelope of the body,

then hands the request to the SDK's session manager with the verified :class:`Caller` in
the ASGI scope (a sessionless request in JSON mode is answered here, through the SDK's
kernel: :mod:`tenantry.server.single_exchange`). One parse of the headers and one send wrapper per request: this sits on
every tool call.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from typing import Any

from mcp.server.auth.middleware.auth_context import auth_context_var
from mcp.server.connection import Connection
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.types import Message, Receive, Scope, Send

from tenantry.core.calls import Caller
from tenantry.core.errors import RateLimited, RequestRejected, TenantryError
from tenantry.ratelimit.fair_share import FairShare, no_turn
from tenantry.ratelimit.pacing import RefusalPacer
from tenantry.ratelimit.requests import RequestBudget
from tenantry.ratelimit.windows import MovingWindow
from tenantry.server.authn import Authenticator, failure_key, sdk_identity
from tenantry.server.credential_lifetime import CredentialLifetime
from tenantry.server.errors import error_response
from tenantry.server.guards import HostOriginPolicy, MethodNotAllowed, check_http_method, read_checked_message
from tenantry.server.headers import RequestHeaders
from tenantry.server.mcp import CALLER_SCOPE_KEY, CURRENT_CALLER
from tenantry.server.sessions import BoundSession, SessionRegistry
from tenantry.server.single_exchange import SingleExchange
from tenantry.server.step_up import StepUp

__all__ = ["McpGate", "REQUEST_ID_SCOPE_KEY"]

REQUEST_ID_SCOPE_KEY = "tenantry.request_id"

ASGIHandler = Callable[[Scope, Receive, Send], Awaitable[None]]


class McpGate:
    def __init__(
        self,
        handler: ASGIHandler,
        *,
        policy: HostOriginPolicy,
        authenticator: Authenticator,
        sessions: SessionRegistry,
        resource_metadata_url: str,
        max_body_bytes: int,
        max_json_depth: int,
        body_timeout: float | None = None,
        sse_responses: bool = False,
        step_up: StepUp | None = None,
        challenge_scope: str | None = None,
        single_exchange: SingleExchange | None = None,
        live_session: Callable[[str, Scope], tuple[Connection, AbstractContextManager[None]] | None] | None = None,
        requests: RequestBudget | None = None,
        pacer: RefusalPacer | None = None,
        refused_credentials: MovingWindow | None = None,
        address_pacer: RefusalPacer | None = None,
        lifetime: CredentialLifetime | None = None,
        fair_share: FairShare | None = None,
    ) -> None:
        self._handler = handler
        self._fair_share = fair_share
        self._lifetime = lifetime
        self._requests = requests
        self._pacer = pacer
        self._refused_credentials = refused_credentials
        self._address_pacer = address_pacer
        self._single_exchange = None if sse_responses else single_exchange
        self._live_session = live_session
        self._step_up = step_up
        self._challenge_scope = challenge_scope
        self._sse_responses = sse_responses
        self._policy = policy
        self._authenticator = authenticator
        self._sessions = sessions
        self._metadata_url = resource_metadata_url
        self._max_body = max_body_bytes
        self._max_depth = max_json_depth
        self._body_timeout = body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = RequestHeaders(scope["headers"])
        request_id = os.urandom(16).hex()
        scope[REQUEST_ID_SCOPE_KEY] = request_id
        refusal = self._policy.refusal(headers)
        if refusal is not None:
            await self._refuse(refusal, request_id, scope, receive, send)
            return
        client = scope.get("client")
        address = client[0] if client else None
        try:
            principal = await self._authenticator.authenticate(headers, address=address, request_id=request_id)
        except TenantryError as exc:
            await self._hold_refusal(address)
            await self._refuse(exc, request_id, scope, receive, send)
            return
        if self._requests is not None:
            try:
                self._requests.admit(principal.tenant_id)
            except RateLimited as exc:
                # Held before it is answered (bounded): a client looping on refusals slows itself down.
                if self._pacer is not None:
                    await self._pacer.pace(principal.tenant_id, exc.retry_after)
                await self._refuse(exc, request_id, scope, receive, send)
                return
        version = headers.get("mcp-protocol-version")
        handshake_era = version is None or version in HANDSHAKE_PROTOCOL_VERSIONS
        # In the sessionless era a client's Mcp-Session-Id proves nothing: it never reaches the
        # caller (audit records then carry the token's jti). In the handshake era it does only
        # once the registry has confirmed the session belongs to this principal.
        session_id = headers.get("mcp-session-id") if handshake_era else None
        caller = Caller(principal=principal, request_id=request_id, client_address=address)
        bound: BoundSession | None = None
        method = scope["method"]
        try:
            if session_id is not None:
                bound = await self._sessions.claim(session_id, caller)
                caller.session_id = session_id
            check_http_method(method, handshake_era=handshake_era)
            body: bytes | None = None
            if method == "POST":
                body, message = await read_checked_message(
                    receive,
                    headers,
                    max_bytes=self._max_body,
                    max_depth=self._max_depth,
                    within=self._body_timeout,
                    sse_responses=self._sse_responses,
                )
                if self._step_up is not None:
                    insufficient = await self._step_up.refusal(caller, message, headers)
                    if insufficient is not None:
                        await self._refuse(insufficient, request_id, scope, receive, send, rpc_id=message.get("id"))
                        return
        except TenantryError as exc:
            allow = "POST, GET, DELETE" if handshake_era else "POST"
            extra = {"Allow": allow} if isinstance(exc, MethodNotAllowed) else None
            await self._refuse(exc, request_id, scope, receive, send, extra)
            return

        opening = handshake_era and session_id is None and method == "POST"
        if opening:
            try:
                self._sessions.reserve(caller.tenant_id)
            except TenantryError as exc:
                await self._refuse(exc, request_id, scope, receive, send)
                return
        rpc_key = _request_key(message) if body is not None else None
        turn = no_turn()
        # Only requests wait for their tenant's turn: a client's answer to a request of the
        # server (elicitation, sampling) or a notification may be what a request waits for.
        if self._fair_share is not None and rpc_key is not None:
            try:
                turn = await self._fair_share.turn(caller.tenant_id)
            except BaseException as exc:
                # Refused, or cancelled while it waited (shutdown): the place held for the session
                # it was opening is given back either way.
                if opening:
                    self._sessions.unreserve(caller.tenant_id)
                if not isinstance(exc, TenantryError):
                    raise
                await self._refuse(exc, request_id, scope, receive, send, rpc_id=message.get("id"))
                return
        assigned: str | None = None
        status = 0

        async def send_tracked(message: Message) -> None:
            nonlocal assigned, status
            if message["type"] == "http.response.start":
                status = message["status"]
                response_headers = message.get("headers", [])
                if opening and status < 400:
                    for key, value in response_headers:
                        if key.lower() == b"mcp-session-id":
                            assigned = value.decode("latin-1")
                            self._sessions.bind(assigned, caller)
                message = {**message, "headers": [*response_headers, (b"x-request-id", request_id.encode())]}
            await send(message)

        # Only responses that open or close a session need watching; the hot path (a call on
        # an open session, or sessionless) goes straight through.
        tracked = opening or method == "DELETE"

        request_key = rpc_key if bound is not None else None
        # The SDK routes a session's answers by request id: a second request with the id of one
        # still in flight would take the first one's answer, and the first would wait for ever.
        if request_key is not None and bound is not None and request_key in bound.request_ids:
            duplicate = RequestRejected(
                "a request with this id is already in flight on this session; each request needs its own id"
            )
            turn.end()
            await self._refuse(duplicate, request_id, scope, receive, send, rpc_id=message.get("id"))
            return
        if body is not None:
            caller.body_bytes = len(body)
        replayed = receive if body is None else _replay(body, receive)
        scope[CALLER_SCOPE_KEY] = caller
        user, credentials = sdk_identity(principal)
        scope["user"] = user
        scope["auth"] = credentials
        caller_token = CURRENT_CALLER.set(caller)
        auth_token = auth_context_var.set(user)
        stream = bound is not None and method == "GET"
        if bound is not None:
            bound.in_flight += 1
            bound.streams += int(stream)
            if request_key is not None:
                bound.request_ids.add(request_key)  # no await since the check above: no race
        try:
            if method == "GET" and self._lifetime is not None:
                # The session's standalone stream: what is pushed on it must not outlive the credential.
                await self._lifetime.serve_while_valid(principal, self._handler, scope, replayed, send)
            elif body is None or not await self._answered_here(
                message, headers, session_id, handshake_era, scope, replayed, send
            ):
                await self._handler(scope, replayed, send_tracked if tracked else send)
        finally:
            turn.end()
            if opening:
                self._sessions.unreserve(caller.tenant_id)
            auth_context_var.reset(auth_token)
            CURRENT_CALLER.reset(caller_token)
            if bound is not None:
                bound.in_flight -= 1
                bound.streams -= int(stream)
                if request_key is not None:
                    bound.request_ids.discard(request_key)
        if assigned is not None:
            await self._sessions.record_opened(assigned, caller)
        elif bound is not None and method == "DELETE" and 200 <= status < 300 and session_id is not None:
            if self._single_exchange is not None:
                self._single_exchange.cancel_session(session_id)
            await self._sessions.close(session_id, caller, "client_closed")

    async def _hold_refusal(self, address: str | None) -> None:
        """Past a few refused credentials from one client, hold each further refusal (bounded) before
        answering it: a loop of garbage or expired tokens then costs the server a few requests a
        second per connection instead of hundreds, and a client's first refusals (the 401 that
        starts OAuth discovery) are answered at once."""
        if self._refused_credentials is None or self._address_pacer is None or address is None:
            return
        key = failure_key(address) or "unknown"
        if not self._refused_credentials.hit(key):
            await self._address_pacer.pace(key, None)

    async def _answered_here(
        self,
        message: dict[str, Any],
        headers: RequestHeaders,
        session_id: str | None,
        handshake_era: bool,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> bool:
        """Whether the single-exchange path answered the request (JSON mode only): a sessionless
        one, or one on an open session whose connection the SDK has already shown us."""
        exchange = self._single_exchange
        if exchange is None:
            return False
        if not handshake_era:
            return await exchange.serve(message, scope, receive, send)
        if session_id is None or self._live_session is None:
            return False
        if message.get("method") == "notifications/cancelled" and "id" not in message:
            params = message.get("params")
            if isinstance(params, dict) and "requestId" in params:
                exchange.cancel(session_id, params["requestId"])
            return False  # the session's own loop sees it too (for requests it runs itself)
        live = self._live_session(session_id, scope)
        if live is None:
            return False
        connection, in_flight = live
        protocol = headers.get("mcp-protocol-version")
        with in_flight:
            return await exchange.serve_in_session(message, protocol, session_id, connection, scope, receive, send)

    async def _refuse(
        self,
        error: TenantryError,
        request_id: str,
        scope: Scope,
        receive: Receive,
        send: Send,
        extra: dict[str, str] | None = None,
        *,
        rpc_id: object = None,
    ) -> None:
        headers = {"X-Request-Id": request_id, **(extra or {})}
        response = error_response(
            error,
            resource_metadata_url=self._metadata_url,
            headers=headers,
            scope=self._challenge_scope,
            request_id=rpc_id,
        )
        await response(scope, receive, send)


def _request_key(message: Any) -> str | None:
    """The key the SDK's transport files a request's answer under (``str`` of its id), or ``None``
    for a message that is not a request (a notification, a client's answer to a server request)."""
    if not isinstance(message, dict) or "method" not in message or message.get("id") is None:
        return None
    return str(message["id"])


def _replay(body: bytes, receive: Receive) -> Receive:
    pending: bytes | None = body

    async def replay() -> Message:
        # The SDK keeps its request (and so this receive) as long as it keeps the message: the
        # body is handed over once and not held here beyond that.
        nonlocal pending
        if pending is not None:
            message: Message = {"type": "http.request", "body": pending, "more_body": False}
            pending = None
            return message
        return await receive()

    return replay
