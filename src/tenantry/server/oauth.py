"""``/oauth/token``: RFC 6749 client-credentials grant whose client secret is a tenant API key, and
the RFC 7523 JWT-bearer grant of an identity assertion (enterprise-managed authorization).

The client authenticates with ``client_id`` = the key id and ``client_secret`` = the whole
API key, either in HTTP Basic (RFC 6749 §2.3.1, form-encoded then base64) or in the form
body, never both. The answer is a short-lived JWT from the built-in issuer whose
``allowed_tools`` is the key's grant (and the tenant's current grants), narrowed by an
optional ``scope`` of space-separated tool names; a scope can only narrow, never widen.
Errors follow RFC 6749 §5.2. Failed client authentications are counted per client address;
past the limit, its further failures get ``429`` (a valid key is always accepted).

JWT-bearer grant (``grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer``, ``assertion=``):
an ID-JAG (``typ: oauth-id-jag+jwt``) from an identity provider configured with
``identity_assertions = true``, whose ``aud`` is this authorization server and whose
``client_id`` claim names the authenticated client (the same API key client as above; the
assertion's tenant must be the key's). Each assertion is accepted once. The token issued is
for the assertion's subject (``<provider>:<sub>``), its tools the assertion's ∩ the key's ∩ the
tenant's grants, and it lives no longer than the assertion nor the default token lifetime.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal
from urllib.parse import parse_qsl, unquote_plus

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tenantry.audit.events import SYSTEM_STREAM, AuditEvent
from tenantry.audit.sink import AuditSink
from tenantry.auth.apikeys import ApiKeyVerifier, api_key_subject, parse_api_key
from tenantry.auth.claims import peek_issuer
from tenantry.auth.replay import AssertionLedger, SeenAssertions
from tenantry.auth.tokens import TokenIssuer
from tenantry.controlplane.directory import TenantDirectory
from tenantry.core.credentials import ApiKeyRecord
from tenantry.core.errors import InvalidCredential, RateLimited, TenantryError
from tenantry.core.ids import is_valid_subject, is_valid_tool_name
from tenantry.ratelimit.failures import FailedAttempts
from tenantry.ratelimit.tenant_limits import TenantLimiter
from tenantry.server.authn import failure_key

if TYPE_CHECKING:  # the provider verifier (and its HTTP client) loads only when providers are configured
    from tenantry.auth.idp import IdentityAssertion, IdentityProviderVerifier

__all__ = ["token_route", "TOKEN_PATH", "JWT_BEARER_GRANT", "OAuthError", "OAuthErrorCode"]

logger = logging.getLogger(__name__)

TOKEN_PATH = "/oauth/token"  # noqa: S105 - a route, not a secret
_MAX_BODY = 8 * 1024
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"

OAuthErrorCode = Literal[
    "invalid_request",
    "invalid_client",
    "invalid_grant",
    "unauthorized_client",
    "unsupported_grant_type",
    "invalid_scope",
    "access_denied",
    "temporarily_unavailable",
]
"""RFC 6749 §5.2 token endpoint error codes (``access_denied`` and ``temporarily_unavailable`` from §4.1.2.1)."""


@dataclass(frozen=True)
class OAuthError(Exception):
    """A token endpoint error: only RFC codes can be answered."""

    error: OAuthErrorCode
    description: str
    status: int = 400
    retry_after: int | None = None


def _error_response(error: OAuthError, request_id: str, *, basic: bool) -> Response:
    headers = {**_NO_STORE, "X-Request-Id": request_id}
    if error.status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="tenantry", charset="UTF-8"' if basic else 'Basic realm="tenantry"'
    if error.retry_after is not None:
        headers["Retry-After"] = str(error.retry_after)
    body = {"error": error.error, "error_description": error.description}
    return Response(json.dumps(body), status_code=error.status, media_type="application/json", headers=headers)


def _form(body: bytes) -> dict[str, str]:
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body), max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        raise OAuthError("invalid_request", "the body must be application/x-www-form-urlencoded UTF-8") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            raise OAuthError("invalid_request", f"parameter {name!r} given more than once")
        form[name] = value
    return form


def _basic_credentials(header: str) -> tuple[str, str]:
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        raise OAuthError("invalid_client", "client authentication must use HTTP Basic or the form body", 401)
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise OAuthError("invalid_client", "malformed HTTP Basic credentials", 401) from None
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise OAuthError("invalid_client", "malformed HTTP Basic credentials", 401)
    return unquote_plus(client_id), unquote_plus(secret)


def token_route(
    *,
    issuer: TokenIssuer,
    api_keys: ApiKeyVerifier,
    directory: TenantDirectory,
    audit: AuditSink,
    failures: FailedAttempts,
    assertion_issuers: Mapping[str, IdentityProviderVerifier] | None = None,
    audience: str = "",
    resource: str = "",
    ledger: AssertionLedger | None = None,
    limiter: TenantLimiter | None = None,
) -> Route:
    """The token endpoint.

    :param limiter: the tenants' limits (the dispatcher's own limiter, so one budget): each token
        issued is counted as one of the tenant's calls, since each costs a signature and a durable
        ``token_issued`` record; over a limit the request gets ``429`` with ``Retry-After``.

    :param assertion_issuers: identity providers by issuer whose assertions the JWT-bearer grant
        accepts (those configured with ``identity_assertions``); none: the grant is unsupported.
    :param audience: this authorization server's issuer, the ``aud`` an assertion must name.
    :param resource: the protected resource, the ``resource`` claim an assertion may name.
    :param ledger: where used assertions are remembered (default: in this process).
    """
    trusted = {i: v for i, v in (assertion_issuers or {}).items() if v.config.identity_assertions}
    seen = ledger or SeenAssertions(leeway=max((v.config.max_assertion_lifetime for v in trusted.values()), default=0))
    grants = ("client_credentials", JWT_BEARER_GRANT) if trusted else ("client_credentials",)

    async def token(request: Request) -> Response:
        request_id = os.urandom(16).hex()
        address = request.client.host if request.client else None
        authorization = request.headers.get("authorization")
        try:
            return await _exchange(request, request_id, address, authorization)
        except OAuthError as exc:
            return _error_response(exc, request_id, basic=authorization is not None)

    async def _exchange(request: Request, request_id: str, address: str | None, authorization: str | None) -> Response:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/x-www-form-urlencoded":
            raise OAuthError("invalid_request", "Content-Type must be application/x-www-form-urlencoded")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > _MAX_BODY:
                raise OAuthError("invalid_request", "request body too large", 413)
        form = _form(body)
        if "grant_type" not in form:
            raise OAuthError("invalid_request", "grant_type is required")
        client_id, secret = _client_credentials(form, authorization)
        record = await _authenticate(client_id, secret, address, request_id)
        grant = form["grant_type"]
        if grant not in grants:
            raise OAuthError("unsupported_grant_type", f"supported grants: {', '.join(grants)}")
        tenant = directory.get(record.tenant_id)
        if tenant is None or tenant.halted:
            reason = "tenant unknown" if tenant is None else "tenant halted"
            await _record_refusal(record, reason, address, request_id)
            if tenant is None:
                raise OAuthError("invalid_client", "client authentication failed", 401)
            raise OAuthError("access_denied", f"tenant {tenant.id!r} is halted by an administrator", 403)
        if limiter is not None:
            await _admit(tenant.id)
        tools = set(record.tools) & tenant.grants
        subject, ttl = api_key_subject(record.key_id), None
        detail: dict[str, object] = {"grant": grant, "key_id": record.key_id}
        if grant == JWT_BEARER_GRANT:
            assertion = await _assertion(form, record, address, request_id)
            tools &= assertion.allowed_tools
            subject = f"{assertion.provider}:{assertion.subject}"
            if not is_valid_subject(subject):
                raise OAuthError("invalid_grant", "the assertion's subject is too long")
            # Never outlive the assertion (nor the usual lifetime of our tokens).
            ttl = min(issuer.default_ttl, assertion.expires_at - int(time.time()))
            if ttl <= 0:
                raise OAuthError("invalid_grant", "the assertion expired")
            detail |= {"assertion_issuer": assertion.issuer, "assertion_jti": assertion.jti}
        scope = form.get("scope")
        if scope is not None:
            requested = scope.split()
            if not requested or not all(is_valid_tool_name(t) for t in requested):
                raise OAuthError("invalid_scope", "scope must be space-separated tool names")
            tools &= set(requested)
            if not tools:
                await _record_refusal(record, "scope grants no tool of this key", address, request_id)
                raise OAuthError("invalid_scope", "none of the requested tools is granted to this key")
        try:
            issued = issuer.issue(
                tenant_id=record.tenant_id, subject=subject, allowed_tools=tools, ttl=ttl, client_id=record.key_id
            )
            await audit.record(
                AuditEvent(
                    event_type="token_issued",
                    tenant_id=record.tenant_id,
                    result_status="ok",
                    subject=subject,
                    ip_address=address,
                    request_id=request_id,
                    detail={
                        **detail,
                        "jti": issued.claims["jti"],
                        "allowed_tools": issued.claims["allowed_tools"],
                        "expires_at": issued.claims["exp"],
                    },
                )
            )
        except TenantryError as exc:
            logger.error("token exchange failed", extra={"code": exc.code, "request_id": request_id})
            status = exc.http_status if exc.http_status >= 500 else 503
            raise OAuthError("temporarily_unavailable", exc.message, status) from None
        claims = issued.claims
        body_out = {
            "access_token": issued.token,
            "token_type": "Bearer",
            "expires_in": claims["exp"] - claims["iat"],
            "scope": " ".join(claims["allowed_tools"]),
        }
        return Response(
            json.dumps(body_out),
            media_type="application/json",
            headers={**_NO_STORE, "X-Request-Id": request_id},
        )

    async def _admit(tenant_id: str) -> None:
        assert limiter is not None
        try:
            slot = await limiter.admit(tenant_id, directory.limits(tenant_id))
        except RateLimited as exc:  # its rate, its burst, its daily quota
            # Refused without an audit record: the limit is what bounds the records.
            raise OAuthError("invalid_request", exc.message, 429, exc.retry_after or 1) from None
        except TenantryError as exc:  # the limits storage is unreachable and the limiter fails closed
            raise OAuthError("temporarily_unavailable", exc.message, 503) from None
        slot.release()  # a token exchange is over when it is answered: nothing stays in flight

    async def _assertion(
        form: dict[str, str], record: ApiKeyRecord, address: str | None, request_id: str
    ) -> IdentityAssertion:
        value = form.get("assertion")
        if not value:
            raise OAuthError("invalid_request", "the jwt-bearer grant needs an assertion")
        verifier = trusted.get(peek_issuer(value) or "")
        try:
            if verifier is None:
                raise InvalidCredential("assertion issuer not accepted")
            assertion = await verifier.verify_assertion(value, audience=audience, resource=resource)
            # RFC 7523 §3 / ID-JAG: the assertion is for this client, and the client's tenant is the one named.
            if assertion.client_id != record.key_id:
                raise InvalidCredential("the assertion was issued to another client")
            if assertion.tenant_id != record.tenant_id:
                raise InvalidCredential("the assertion names another tenant than the client's")
            first = await seen.first_use(assertion.issuer, assertion.jti, assertion.expires_at)
            if first is None:
                raise OAuthError("temporarily_unavailable", "too many assertions in flight; retry shortly", 503)
            if not first:
                raise InvalidCredential("the assertion was already used")
        except InvalidCredential as exc:
            await _record_refusal(record, f"invalid_grant: {exc.message}", address, request_id)
            raise OAuthError("invalid_grant", exc.message) from None
        return assertion

    def _client_credentials(form: dict[str, str], authorization: str | None) -> tuple[str, str]:
        in_body = "client_secret" in form
        if authorization is not None and in_body:
            raise OAuthError("invalid_request", "use one client authentication method, not two")
        if authorization is not None:
            client_id, secret = _basic_credentials(authorization)
            if "client_id" in form and form["client_id"] != client_id:
                raise OAuthError("invalid_request", "client_id in the body differs from HTTP Basic")
            return client_id, secret
        if not in_body:
            raise OAuthError("invalid_client", "client authentication is required", 401)
        return form.get("client_id", ""), form["client_secret"]

    async def _authenticate(client_id: str, secret: str, address: str | None, request_id: str) -> ApiKeyRecord:
        # Verified first, always: a valid key works whatever its address did before.
        try:
            if parse_api_key(secret).key_id != client_id:
                raise InvalidCredential("client_id does not match the key")
            return await api_keys.authenticate(secret)
        except InvalidCredential as exc:
            try:
                failures.failed(failure_key(address))
            except RateLimited as limited:
                # Over the limit: refused without another audit record (the limit bounds them).
                raise OAuthError("invalid_request", limited.message, 429, limited.retry_after) from None
            await _audit_failed_client(exc.message, address, request_id)
            raise OAuthError("invalid_client", "client authentication failed", 401) from None

    async def _audit_failed_client(reason: str, address: str | None, request_id: str) -> None:
        # The tenant named by an unproven key is not trusted: failures go to the system stream.
        try:
            await audit.record(
                AuditEvent(
                    event_type="token_refused",
                    tenant_id=SYSTEM_STREAM,
                    result_status="rejected",
                    ip_address=address,
                    request_id=request_id,
                    reason=f"invalid_client: {reason}",
                )
            )
        except TenantryError:
            logger.warning("could not audit a refused token request", extra={"request_id": request_id})

    async def _record_refusal(record: ApiKeyRecord, reason: str, address: str | None, request_id: str) -> None:
        try:
            await audit.record(
                AuditEvent(
                    event_type="token_refused",
                    tenant_id=record.tenant_id,
                    result_status="denied",
                    subject=api_key_subject(record.key_id),
                    ip_address=address,
                    request_id=request_id,
                    reason=reason,
                    detail={"key_id": record.key_id},
                )
            )
        except TenantryError:
            logger.warning("could not audit a refused token request", extra={"request_id": request_id})

    return Route(TOKEN_PATH, token, methods=["POST"])
