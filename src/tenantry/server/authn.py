"""Bearer authentication for ``/mcp``: the only place a tenant identity enters the server.

Every HTTP request is verified on its own (both protocol eras). The verified principal
is attached to the ASGI scope as a :class:`Caller` and, for the SDK's own session-owner
check, as an ``AuthenticatedUser`` whose ``client_id`` names the tenant, so that the
SDK's ``(client_id, issuer, subject)`` comparison covers the full principal too.
"""

from __future__ import annotations

import functools
import logging
import re
import uuid

from mcp.server.auth.middleware.auth_context import auth_context_var
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from starlette.authentication import AuthCredentials
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tenantry.audit.events import SYSTEM_STREAM, AuditEvent
from tenantry.audit.sink import AuditSink
from tenantry.auth.tokens import CredentialVerifier
from tenantry.controlplane.directory import TenantDirectory
from tenantry.core.calls import Caller
from tenantry.core.errors import InvalidCredential, TenantHalted, TenantryError
from tenantry.core.identity import Principal
from tenantry.server.errors import error_response
from tenantry.server.mcp import CALLER_SCOPE_KEY, CURRENT_CALLER

__all__ = ["BearerAuthentication", "REQUEST_ID_SCOPE_KEY"]

logger = logging.getLogger(__name__)

REQUEST_ID_SCOPE_KEY = "tenantry.request_id"
_BEARER = re.compile(r"Bearer +([A-Za-z0-9\-._~+/]+=*) *", re.IGNORECASE)


@functools.lru_cache(maxsize=4096)
def _sdk_identity(principal: Principal) -> tuple[AuthenticatedUser, AuthCredentials]:
    """The SDK's view of a principal (cached: verified principals are themselves cached)."""
    token = AccessToken(
        token="",  # the raw credential is never kept beyond verification
        client_id=f"tenant:{principal.tenant_id}",
        scopes=sorted(principal.allowed_tools),
        expires_at=principal.expires_at,
        subject=principal.subject,
        claims={"iss": principal.issuer, "tenant_id": principal.tenant_id, "jti": principal.token_id},
    )
    return AuthenticatedUser(token), AuthCredentials(sorted(principal.allowed_tools))


class BearerAuthentication:
    """Verifies the bearer credential, the tenant's existence and its kill switch.

    Missing or bad credential: 401 with ``WWW-Authenticate: Bearer ..., resource_metadata=``.
    Halted tenant: 403 ``tenant_halted``. Each refusal is audited as ``connection_rejected``.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        verifier: CredentialVerifier,
        directory: TenantDirectory,
        audit: AuditSink,
        resource_metadata_url: str,
    ) -> None:
        self.app = app
        self._verifier = verifier
        self._directory = directory
        self._audit = audit
        self._metadata_url = resource_metadata_url

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = uuid.uuid4().hex
        scope[REQUEST_ID_SCOPE_KEY] = request_id
        headers = Headers(scope=scope)
        client = scope.get("client")
        address = client[0] if client else None
        session_id = headers.get("mcp-session-id")
        try:
            principal = await self._authenticate(headers)
        except TenantryError as exc:
            await self._reject(exc, None, address, request_id, session_id)
            await error_response(exc, resource_metadata_url=self._metadata_url, headers={"X-Request-Id": request_id})(
                scope, receive, send
            )
            return
        tenant = self._directory.get(principal.tenant_id)
        refusal: TenantryError | None = None
        if tenant is None:
            refusal = InvalidCredential("the credential's tenant is not known to this server")
        elif tenant.halted:
            refusal = TenantHalted(f"tenant {tenant.id!r} is halted by an administrator")
        if refusal is not None:
            await self._reject(refusal, principal, address, request_id, session_id)
            await error_response(
                refusal, resource_metadata_url=self._metadata_url, headers={"X-Request-Id": request_id}
            )(scope, receive, send)
            return

        caller = Caller(principal=principal, request_id=request_id, session_id=session_id, client_address=address)
        scope[CALLER_SCOPE_KEY] = caller
        user, credentials = _sdk_identity(principal)
        scope["user"] = user
        scope["auth"] = credentials
        caller_token = CURRENT_CALLER.set(caller)
        auth_token = auth_context_var.set(user)

        async def send_with_request_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", request_id.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_request_id)
        finally:
            auth_context_var.reset(auth_token)
            CURRENT_CALLER.reset(caller_token)

    async def _authenticate(self, headers: Headers) -> Principal:
        values = headers.getlist("authorization")
        if not values:
            raise InvalidCredential("A bearer token is required")
        if len(values) > 1:
            raise InvalidCredential("send exactly one Authorization header")
        match = _BEARER.fullmatch(values[0])
        if match is None:
            raise InvalidCredential("Authorization must be 'Bearer <token>'")
        return await self._verifier.verify(match.group(1))

    async def _reject(
        self,
        error: TenantryError,
        principal: Principal | None,
        address: str | None,
        request_id: str,
        session_id: str | None,
    ) -> None:
        try:
            await self._audit.record(
                AuditEvent(
                    event_type="connection_rejected",
                    tenant_id=principal.tenant_id if principal is not None else SYSTEM_STREAM,
                    result_status="rejected",
                    session_id=session_id,
                    subject=principal.subject if principal is not None else None,
                    ip_address=address,
                    request_id=request_id,
                    reason=f"{error.code}: {error.message}",
                )
            )
        except TenantryError:
            logger.warning("could not audit a rejected connection", extra={"request_id": request_id})
