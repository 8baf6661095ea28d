"""Access tokens from external identity providers (Keycloak, Okta, Entra ID, Auth0, Google...).

Each provider is pinned by issuer, accepted audiences and algorithms, and its keys come
only from its own JWKS (never from the token). The tenant comes from a configured claim
(``tenant_id``, ``org_id``, ``tid``...), optionally mapped, and must be one the provider may
speak for; a token without it is refused. Tools come from a claim or from scopes mapped to
tools. Where the provider issues no ``jti``, a hash of the token stands in for it (so it
can still be revoked and audited).
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError

from tenantry.auth.claims import (
    check_audience,
    check_header,
    check_subject,
    check_time_claims,
    parse_resource_prefix,
    parse_tool_list,
    read_header,
)
from tenantry.auth.jwks import RemoteJwks
from tenantry.core.errors import InvalidCredential
from tenantry.core.identity import Principal
from tenantry.core.ids import is_valid_tenant_id
from tenantry.core.settings import IdentityProviderSettings

__all__ = ["IdentityProviderVerifier", "IdentityAssertion", "ID_JAG_TYP"]

_CACHE_SIZE = 4096

ID_JAG_TYP = "oauth-id-jag+jwt"
"""The ``typ`` header of an Identity Assertion JWT Authorization Grant (enterprise-managed authorization)."""


@dataclass(frozen=True, slots=True)
class IdentityAssertion:
    """A verified identity assertion: who the provider says is asking, for which client and tenant."""

    issuer: str
    provider: str
    tenant_id: str
    subject: str
    client_id: str
    allowed_tools: frozenset[str]
    jti: str
    expires_at: int


class IdentityProviderVerifier:
    """Verifies one provider's access tokens.

    :param default_audience: accepted ``aud`` when the provider's configuration names none.
    """

    def __init__(
        self,
        config: IdentityProviderSettings,
        *,
        default_audience: str,
        leeway: int,
        max_token_bytes: int,
        jwks: RemoteJwks | None = None,
    ) -> None:
        self.config = config
        self._algs = frozenset(config.algorithms)
        self._audiences = frozenset(config.audience or (default_audience,))
        self._leeway = leeway
        self._max_bytes = max_token_bytes
        self._tenants = frozenset(config.tenants)
        self.jwks = jwks or RemoteJwks(
            issuer=config.issuer,
            jwks_url=config.jwks_url,
            discovery_url=config.discovery_url
            or (None if config.jwks_url else config.issuer.rstrip("/") + "/.well-known/openid-configuration"),
            allowed_algs=self._algs,
            max_age=config.jwks_cache_ttl,
            min_refresh_interval=config.jwks_min_refresh_interval,
            timeout=config.http_timeout,
        )
        self._cache: OrderedDict[str, tuple[int, Principal]] = OrderedDict()

    @property
    def issuer(self) -> str:
        return self.config.issuer

    async def verify(self, credential: str) -> Principal:
        now = time.time()
        cached = self._cache.get(credential)
        if cached is not None and cached[0] == self.jwks.version:
            principal = cached[1]
            if now >= principal.expires_at + self._leeway:
                raise InvalidCredential("token expired")
            return principal
        header = read_header(credential, self._max_bytes)
        if header.get("typ") == ID_JAG_TYP:
            raise InvalidCredential("an identity assertion is not an access token; exchange it at the token endpoint")
        principal = self._principal(await self._verified_claims(credential, header), credential, now)
        self._cache[credential] = (self.jwks.version, principal)
        if len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        return principal

    async def verify_assertion(self, assertion: str, *, audience: str, resource: str) -> IdentityAssertion:
        """Verify an ID-JAG presented to our authorization server (``audience``) for ``resource``.

        Checks the ``typ`` header, signature (the provider's JWKS only), ``iss``, ``aud``, the
        ``resource`` claim when present, ``exp``/``nbf``/``iat`` and the lifetime, and requires
        ``client_id`` and ``jti`` (replay is the caller's check). Tenant and tools are mapped as
        for this provider's access tokens.

        :raises InvalidCredential: with the specific reason.
        """
        config = self.config
        if not config.identity_assertions:
            raise InvalidCredential("this identity provider is not trusted for identity assertions")
        header = read_header(assertion, self._max_bytes)
        if header.get("typ") != ID_JAG_TYP:
            raise InvalidCredential(f"the assertion's typ header must be {ID_JAG_TYP!r}")
        claims = await self._verified_claims(assertion, header)
        if claims.get("iss") != config.issuer:
            raise InvalidCredential("assertion issuer not accepted")
        check_audience(claims, frozenset((audience,)))
        if "resource" in claims and claims["resource"] != resource:
            raise InvalidCredential("the assertion is for another resource")
        exp, _ = check_time_claims(claims, time.time(), leeway=self._leeway, max_lifetime=config.max_assertion_lifetime)
        client_id, jti = claims.get("client_id"), claims.get("jti")
        if not isinstance(client_id, str) or not client_id:
            raise InvalidCredential("the assertion lacks the client_id claim")
        if not isinstance(jti, str) or not 0 < len(jti) <= 128:
            raise InvalidCredential("the assertion lacks a jti claim")
        return IdentityAssertion(
            issuer=config.issuer,
            provider=config.name,
            tenant_id=self._tenant(claims),
            subject=check_subject(claims.get(config.subject_claim)),
            client_id=client_id,
            allowed_tools=self._tools(claims),
            jti=jti,
            expires_at=exp,
        )

    async def _verified_claims(self, credential: str, header: dict[str, Any]) -> Mapping[str, Any]:
        check_header(header, self._algs, require_kid=False)
        alg = header["alg"]
        key = await self.jwks.key(header.get("kid"), alg)
        try:
            decoded = jwt.decode(credential, key.key, algorithms=[alg])
        except JoseError:
            raise InvalidCredential("token signature invalid") from None
        except (ValueError, TypeError):
            raise InvalidCredential("malformed token") from None
        return decoded.claims

    def _principal(self, claims: Mapping[str, Any], credential: str, now: float) -> Principal:
        config = self.config
        if claims.get("iss") != config.issuer:
            raise InvalidCredential("token issuer not accepted")
        check_audience(claims, self._audiences)
        exp, iat = check_time_claims(claims, now, leeway=self._leeway, max_lifetime=config.max_token_lifetime)
        tenant_id = self._tenant(claims)
        subject = check_subject(claims.get(config.subject_claim))
        jti = claims.get("jti")
        if not isinstance(jti, str) or not 0 < len(jti) <= 128:
            jti = "sha256:" + hashlib.sha256(credential.encode()).hexdigest()[:32]
        return Principal(
            issuer=config.issuer,
            tenant_id=tenant_id,
            subject=subject,
            allowed_tools=self._tools(claims),
            token_id=jti,
            expires_at=exp,
            issued_at=iat,
            resource_prefix=parse_resource_prefix(claims.get(config.prefix_claim)) if config.prefix_claim else None,
            credential_kind="jwt",
        )

    def _tenant(self, claims: Mapping[str, Any]) -> str:
        config = self.config
        value = claims.get(config.tenant_claim)
        if value is None:
            raise InvalidCredential(f"token lacks the tenant claim {config.tenant_claim!r}")
        if not isinstance(value, str):
            raise InvalidCredential(f"token claim {config.tenant_claim!r} must be a string")
        if config.tenant_map:
            mapped = config.tenant_map.get(value)
            if mapped is None:
                raise InvalidCredential("token names a tenant this identity provider may not speak for")
            value = mapped
        elif "*" not in self._tenants and value not in self._tenants:
            raise InvalidCredential("token names a tenant this identity provider may not speak for")
        if not is_valid_tenant_id(value):
            raise InvalidCredential("token tenant is not a valid tenant id")
        return value

    def _tools(self, claims: Mapping[str, Any]) -> frozenset[str]:
        config = self.config
        if config.tools_claim is not None:
            value = claims.get(config.tools_claim)
            if value is None:
                return frozenset()
            return parse_tool_list(value, claim=config.tools_claim, allow_string=True)
        scopes: list[str] = []
        for name in ("scope", "scp"):
            value = claims.get(name)
            if isinstance(value, str):
                scopes += value.split()
            elif isinstance(value, list):
                scopes += [s for s in value if isinstance(s, str)]
        tools: set[str] = set()
        for scope in scopes:
            tools.update(config.scope_tools.get(scope, ()))
        return frozenset(tools)
