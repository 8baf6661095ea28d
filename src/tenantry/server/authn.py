"""Bearer authentication for ``/mcp``: the only place a tenant identity enters the server.

Every HTTP request is verified on its own (both protocol eras): the credential, then the
tenant's existence and kill switch. The SDK gets its own view of the principal (an
``AuthenticatedUser`` whose ``client_id`` names the tenant), so the SDK's session-owner
check ``(client_id, issuer, subject)`` also covers the full principal.
"""

from __future__ import annotations

import functools
import logging

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from starlette.authentication import AuthCredentials

from tenantry.audit.events import SYSTEM_STREAM, AuditEvent
from tenantry.audit.sink import AuditSink
from tenantry.auth.tokens import CredentialVerifier
from tenantry.controlplane.directory import TenantDirectory
from tenantry.core.errors import InvalidCredential, TenantHalted, TenantryError
from tenantry.core.identity import Principal
from tenantry.server.headers import RequestHeaders

__all__ = ["Authenticator", "sdk_identity"]

logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=4096)
def sdk_identity(principal: Principal) -> tuple[AuthenticatedUser, AuthCredentials]:
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


class Authenticator:
    """Verifies the bearer credential, the tenant's existence and its kill switch.

    Each refusal is audited as ``connection_rejected`` (in the tenant's stream when the
    credential named one, else in the system stream), never with the credential itself.
    """

    def __init__(self, *, verifier: CredentialVerifier, directory: TenantDirectory, audit: AuditSink) -> None:
        self._verifier = verifier
        self._directory = directory
        self._audit = audit

    async def authenticate(self, headers: RequestHeaders, *, address: str | None, request_id: str) -> Principal:
        """The verified principal of this request.

        :raises InvalidCredential: missing, malformed or unacceptable credential; unknown tenant.
        :raises TenantHalted: the tenant's kill switch is on.
        """
        principal: Principal | None = None
        try:
            principal = await self._verify(headers)
            tenant = self._directory.get(principal.tenant_id)
            if tenant is None:
                raise InvalidCredential("the credential's tenant is not known to this server")
            if tenant.halted:
                raise TenantHalted(f"tenant {tenant.id!r} is halted by an administrator")
        except TenantryError as exc:
            await self._reject(exc, principal, address, request_id, headers.get("mcp-session-id"))
            raise
        return principal

    async def _verify(self, headers: RequestHeaders) -> Principal:
        value = headers.get("authorization")
        if value is None:
            raise InvalidCredential("A bearer token is required")
        if headers.count("authorization") > 1:
            raise InvalidCredential("send exactly one Authorization header")
        scheme, _, credential = value.strip().partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential or " " in credential or "," in credential:
            raise InvalidCredential("Authorization must be 'Bearer <token>'")
        return await self._verifier.verify(credential)

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
