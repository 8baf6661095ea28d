"""Issuing and verifying the built-in issuer's JWTs.

Verification is deliberately narrow: the key is chosen by ``kid`` from our own key ring
only, the token's ``alg`` must equal that key's algorithm (so ``none``, HMAC-with-the-
public-key and any other confusion fail), headers that carry or point to keys (``jwk``,
``jku``, ``x5u``, ``x5c``) are refused, and every claim is checked with a specific reason.
"""

from __future__ import annotations

import time
import uuid
import warnings
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from joserfc import jwt
from joserfc.errors import JoseError, SecurityWarning

from tenantry.auth.claims import (
    check_audience,
    check_header,
    check_subject,
    check_time_claims,
    parse_resource_prefix,
    parse_tool_list,
    read_header,
)
from tenantry.auth.keys import KeyRing
from tenantry.core.durations import format_duration
from tenantry.core.errors import InvalidCredential, UsageError
from tenantry.core.identity import Principal
from tenantry.core.ids import is_valid_tenant_id, is_valid_tool_name, validate_subject, validate_tenant_id
from tenantry.core.paths import PathRejected, normalize_prefix

__all__ = [
    "CredentialVerifier",
    "TokenIssuer",
    "JwtVerifier",
    "IssuedToken",
    "REQUIRED_CLAIMS",
]

# RFC 9864 deprecates the polymorphic "EdDSA" name in favour of "Ed25519"; we still issue
# "EdDSA" because it is what deployed verifiers understand, and pin it to Ed25519 keys.
warnings.filterwarnings("ignore", message="EdDSA is deprecated", category=SecurityWarning)

REQUIRED_CLAIMS = ("sub", "tenant_id", "allowed_tools", "exp", "iat", "iss", "aud", "jti")
_SIGNING_ALGS = frozenset({"EdDSA", "ES256"})
_CACHE_SIZE = 4096


class CredentialVerifier(Protocol):
    """Turns a presented bearer credential into a :class:`Principal`.

    Implementations must check everything they can about the credential itself
    (signature, issuer, audience, lifetime); tenant status and revocation are checked
    by the caller.
    """

    async def verify(self, credential: str) -> Principal:
        """Return the verified principal.

        :raises InvalidCredential: with a caller-safe reason when the credential is not acceptable.
        """
        ...


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    claims: dict[str, Any]


class TokenIssuer:
    """Signs short-lived tenant tokens with the key ring's current key.

    :param issuer: our ``iss``; :param audience: the protected resource (``<public_url>/mcp``).
    """

    def __init__(
        self,
        keys: KeyRing,
        *,
        issuer: str,
        audience: str,
        default_ttl: int,
        max_lifetime: int,
    ) -> None:
        self._keys = keys
        self._issuer = issuer
        self._audience = audience
        self._default_ttl = default_ttl
        self._max_lifetime = max_lifetime

    @property
    def default_ttl(self) -> int:
        return self._default_ttl

    def issue(
        self,
        *,
        tenant_id: str,
        subject: str,
        allowed_tools: Iterable[str],
        resource_prefix: str | None = None,
        ttl: int | None = None,
        now: int | None = None,
        client_id: str | None = None,
    ) -> IssuedToken:
        """Sign a token.

        :raises UsageError: for an invalid tenant, subject, tool, prefix or a TTL above the maximum lifetime.
        """
        validate_tenant_id(tenant_id)
        validate_subject(subject)
        tools = sorted(set(allowed_tools))
        for tool in tools:
            if not is_valid_tool_name(tool):
                raise UsageError(f"invalid tool name {tool!r}")
        lifetime = self._default_ttl if ttl is None else ttl
        if lifetime > self._max_lifetime:
            raise UsageError(
                f"requested lifetime {format_duration(lifetime)} exceeds the maximum token lifetime "
                f"of {format_duration(self._max_lifetime)}"
            )
        if lifetime <= 0:
            raise UsageError("token lifetime must be positive")
        issued_at = int(time.time()) if now is None else now
        claims: dict[str, Any] = {
            "iss": self._issuer,
            "aud": self._audience,
            "sub": subject,
            "tenant_id": tenant_id,
            "allowed_tools": tools,
            "iat": issued_at,
            "nbf": issued_at,
            "exp": issued_at + lifetime,
            "jti": uuid.uuid4().hex,
        }
        if client_id is not None:  # RFC 9068 §2.2: the client (API key) the token was issued to
            claims["client_id"] = client_id
        if resource_prefix:
            try:
                claims["resource_prefix"] = normalize_prefix(resource_prefix)
            except PathRejected as exc:
                raise UsageError(f"invalid resource prefix: {exc.reason}") from None
        key = self._keys.current()
        token = jwt.encode({"alg": key.alg, "kid": key.kid, "typ": "JWT"}, claims, key.key, algorithms=[key.alg])
        return IssuedToken(token=token, claims=claims)


class JwtVerifier:
    """Verifies tokens signed by our own key ring (see module docstring for the rules)."""

    def __init__(
        self,
        keys: KeyRing,
        *,
        issuer: str,
        audience: str,
        max_lifetime: int,
        leeway: int,
        max_token_bytes: int,
    ) -> None:
        self._keys = keys
        self._issuer = issuer
        self._audiences = frozenset({audience})
        self._max_lifetime = max_lifetime
        self._leeway = leeway
        self._max_bytes = max_token_bytes
        # Signature checks are pure functions of (token, key set); results are reused until the
        # key set changes. Time-based claims are re-checked on every use.
        self._cache: OrderedDict[str, tuple[int, Principal, float]] = OrderedDict()

    @property
    def issuer(self) -> str:
        return self._issuer

    async def verify(self, credential: str) -> Principal:
        return self.verify_sync(credential)

    def verify_sync(self, credential: str, *, now: float | None = None) -> Principal:
        """Synchronous core of :meth:`verify` (pure CPU, microseconds on a cache hit)."""
        current = time.time() if now is None else now
        cached = self._cache.get(credential)
        if cached is not None and cached[0] == self._keys.current_version() and current < cached[2]:
            principal = cached[1]
            if current >= principal.expires_at:
                raise InvalidCredential("token expired")
            return principal
        principal, key_retires = self._verify_uncached(credential, current)
        self._cache[credential] = (self._keys.version, principal, key_retires)
        if len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        return principal

    def _verify_uncached(self, credential: str, now: float) -> tuple[Principal, float]:
        header = read_header(credential, self._max_bytes)
        check_header(header, _SIGNING_ALGS)
        key = self._keys.get(header["kid"])
        if key is None or key.state(now) == "retired":
            raise InvalidCredential("token signed by an unknown or retired key")
        if header["alg"] != key.alg:
            raise InvalidCredential("token algorithm not allowed")
        try:
            decoded = jwt.decode(credential, key.key, algorithms=[key.alg])
        except JoseError:
            raise InvalidCredential("token signature invalid") from None
        except (ValueError, TypeError):
            raise InvalidCredential("malformed token") from None
        retires = float(key.retire_after) if key.status == "previous" and key.retire_after else float("inf")
        return self._principal_from_claims(decoded.claims, now), retires

    def _principal_from_claims(self, claims: Mapping[str, Any], now: float) -> Principal:
        missing = [name for name in REQUIRED_CLAIMS if name not in claims]
        if missing:
            raise InvalidCredential(f"token lacks required claims: {', '.join(missing)}")
        if claims["iss"] != self._issuer:
            raise InvalidCredential("token issuer not accepted")
        check_audience(claims, self._audiences)
        exp, iat = check_time_claims(claims, now, leeway=self._leeway, max_lifetime=self._max_lifetime, expiry_leeway=0)
        tenant_id, jti = claims["tenant_id"], claims["jti"]
        if not is_valid_tenant_id(tenant_id):
            raise InvalidCredential("token tenant_id is invalid")
        subject = check_subject(claims["sub"])
        if not isinstance(jti, str) or not 0 < len(jti) <= 128:
            raise InvalidCredential("token jti is invalid")
        tools = parse_tool_list(claims["allowed_tools"])
        prefix = parse_resource_prefix(claims.get("resource_prefix"))
        client_id = claims.get("client_id")
        if client_id is not None and (not isinstance(client_id, str) or not 0 < len(client_id) <= 64):
            raise InvalidCredential("token client_id is invalid")
        return Principal(
            issuer=self._issuer,
            tenant_id=tenant_id,
            subject=subject,
            allowed_tools=tools,
            token_id=jti,
            expires_at=exp,
            issued_at=iat,
            resource_prefix=prefix,
            credential_kind="jwt",
            via_api_key=client_id,
        )
