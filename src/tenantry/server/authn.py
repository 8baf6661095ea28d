"""Bearer authentication for ``/mcp``: the only place a tenant identity enters the server.

Every HTTP request is verified on its own (both protocol eras): the credential, then
revocation, then the tenant's existence and kill switch, all against the in-memory
control-plane view (so a revocation or halt from the CLI applies to live sessions at
their next request). The SDK gets its own view of the principal (an ``AuthenticatedUser``
whose ``client_id`` names the tenant), so the SDK's session-owner check
``(client_id, issuer, subject)`` also covers the full principal.
"""

from __future__ import annotations

import functools
import logging
import time

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from starlette.authentication import AuthCredentials

from tenantry.audit.events import SYSTEM_STREAM, AuditEvent
from tenantry.audit.sink import AuditSink
from tenantry.auth.apikeys import looks_like_api_key
from tenantry.auth.tokens import CredentialVerifier
from tenantry.controlplane.directory import TenantDirectory
from tenantry.core.addresses import address_bucket
from tenantry.core.errors import InvalidCredential, TenantHalted, TenantryError
from tenantry.core.identity import Principal
from tenantry.ratelimit.failures import FailedAttempts
from tenantry.ratelimit.record_budget import RecordBudget
from tenantry.server.headers import RequestHeaders

__all__ = ["Authenticator", "sdk_identity", "check_standing", "api_key_counts", "failure_key"]

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


def api_key_counts(directory: TenantDirectory, key_id: str, tenant_id: str, now: float | None = None) -> bool:
    """Whether the API key ``key_id`` of ``tenant_id`` is known, active and not expired."""
    key = directory.api_key(key_id)
    current = time.time() if now is None else now
    return key is not None and key.active and key.tenant_id == tenant_id and not key.expired(current)


def check_standing(principal: Principal, directory: TenantDirectory) -> None:
    """Refuse a verified principal whose credential is revoked or whose tenant is unknown or halted.

    A token exchanged for an API key counts only while the key does: whatever its subject (the
    key's own, or an identity assertion's user), and however soon after the key's revocation it
    was exchanged.

    :raises InvalidCredential: revoked, or the tenant is not known here.
    :raises TenantHalted: the tenant's kill switch is on.
    """
    revoked = directory.revocations.reason(principal)
    if revoked is not None:
        raise InvalidCredential(revoked)
    if principal.via_api_key is not None and not api_key_counts(directory, principal.via_api_key, principal.tenant_id):
        raise InvalidCredential("token revoked (the API key it was exchanged for is no longer valid)")
    tenant = directory.get(principal.tenant_id)
    if tenant is None:
        raise InvalidCredential("the credential's tenant is not known to this server")
    if tenant.halted:
        raise TenantHalted(f"tenant {tenant.id!r} is halted by an administrator")


def failure_key(address: str | None) -> str | None:
    """What failed API-key attempts count against: the client (an address; an IPv6 ``/64``).

    Not the key id: ids are not secret, so counting per id would let anyone make a key's
    rightful holder's mistakes costlier; and a 256-bit secret cannot be guessed from many
    addresses either. Whatever the count, a valid key is always accepted.
    """
    return None if address is None else "addr:" + address_bucket(address)


class Authenticator:
    """Verifies the bearer credential, the tenant's existence and its kill switch.

    Each refusal is audited as ``connection_rejected`` (in the tenant's stream when the
    credential named one, else in the system stream), never with the credential itself.
    """

    def __init__(
        self,
        *,
        verifier: CredentialVerifier,
        directory: TenantDirectory,
        audit: AuditSink,
        failures: FailedAttempts | None = None,
        budget: RecordBudget | None = None,
    ) -> None:
        self._verifier = verifier
        self._directory = directory
        self._audit = audit
        self._failures = failures
        self._budget = budget or RecordBudget()

    async def authenticate(self, headers: RequestHeaders, *, address: str | None, request_id: str) -> Principal:
        """The verified principal of this request.

        :raises InvalidCredential: missing, malformed or unacceptable credential; unknown tenant.
        :raises TenantHalted: the tenant's kill switch is on.
        """
        principal: Principal | None = None
        try:
            principal = await self._verify(headers, address)
            check_standing(principal, self._directory)
        except TenantryError as exc:
            await self._reject(exc, principal, address, request_id)
            raise
        return principal

    async def _verify(self, headers: RequestHeaders, address: str | None) -> Principal:
        value = headers.get("authorization")
        if value is None:
            raise InvalidCredential("A bearer token is required")
        if headers.count("authorization") > 1:
            raise InvalidCredential("send exactly one Authorization header")
        scheme, _, credential = value.strip().partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential or " " in credential or "," in credential:
            raise InvalidCredential("Authorization must be 'Bearer <token>'")
        if self._failures is None or not looks_like_api_key(credential):
            return await self._verifier.verify(credential)
        # API keys are long-lived secrets: failures are counted per client and, past the limit,
        # answered 429. Verification always runs first, so a valid key always works.
        try:
            return await self._verifier.verify(credential)
        except InvalidCredential:
            self._failures.failed(failure_key(address))
            raise

    async def _reject(
        self, error: TenantryError, principal: Principal | None, address: str | None, request_id: str
    ) -> None:
        # Only verified facts go into the record: no client-chosen session id or header text.
        stream = principal.tenant_id if principal is not None else SYSTEM_STREAM
        source = address or "unknown"
        if not self._budget.admit(stream, source):
            return
        try:
            await self._audit.record(
                AuditEvent(
                    event_type="connection_rejected",
                    tenant_id=stream,
                    result_status="rejected",
                    subject=principal.subject if principal is not None else None,
                    ip_address=address,
                    request_id=request_id,
                    reason=f"{error.code}: {error.message}",
                    principal=principal,
                )
            )
        except TenantryError:
            logger.warning("could not audit a rejected connection", extra={"request_id": request_id})

    async def record_suppressed(self) -> None:
        """One summary record per stream for the refusals over the record budget since last time."""
        for stream, counts in self._budget.take_suppressed().items():
            top = dict(sorted(counts.items(), key=lambda item: -item[1])[:20])
            total = sum(counts.values())
            try:
                await self._audit.record(
                    AuditEvent(
                        event_type="connection_rejected",
                        tenant_id=stream,
                        result_status="rejected",
                        reason=f"{total} further refused requests not recorded one by one (audit record budget)",
                        detail={"suppressed": total, "sources": len(counts), "by_source": top},
                    )
                )
            except TenantryError:
                logger.warning("could not audit suppressed rejections", extra={"tenant_id": stream})
