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

from joserfc import jws, jwt
from joserfc.errors import JoseError, SecurityWarning

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
_KEY_BEARING_HEADERS = frozenset({"jwk", "jku", "x5u", "x5c"})
_ALLOWED_HEADERS = frozenset({"alg", "kid", "typ", "cty"})
_MAX_TOOLS = 1024
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

    def issue(
        self,
        *,
        tenant_id: str,
        subject: str,
        allowed_tools: Iterable[str],
        resource_prefix: str | None = None,
        ttl: int | None = None,
        now: int | None = None,
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
        self._audience = audience
        self._max_lifetime = max_lifetime
        self._leeway = leeway
        self._max_bytes = max_token_bytes
        # Signature checks are pure functions of (token, key set); results are reused until the
        # key set changes. Time-based claims are re-checked on every use.
        self._cache: OrderedDict[str, tuple[int, Principal]] = OrderedDict()

    @property
    def issuer(self) -> str:
        return self._issuer

    async def verify(self, credential: str) -> Principal:
        return self.verify_sync(credential)

    def verify_sync(self, credential: str, *, now: float | None = None) -> Principal:
        """Synchronous core of :meth:`verify` (pure CPU, microseconds on a cache hit)."""
        current = time.time() if now is None else now
        cached = self._cache.get(credential)
        if cached is not None and cached[0] == self._keys.version:
            principal = cached[1]
            if current > principal.expires_at + self._leeway:
                raise InvalidCredential("token expired")
            return principal
        principal = self._verify_uncached(credential, current)
        self._remember(credential, principal)
        return principal

    def _remember(self, credential: str, principal: Principal) -> None:
        self._cache[credential] = (self._keys.version, principal)
        if len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)

    def _verify_uncached(self, credential: str, now: float) -> Principal:
        if len(credential) > self._max_bytes:
            raise InvalidCredential("token too large")
        if credential.count(".") != 2:
            raise InvalidCredential("malformed token: expected a signed JWT")
        try:
            header = jws.extract_compact(credential.encode("ascii")).headers()
        except (JoseError, ValueError, UnicodeError):
            raise InvalidCredential("malformed token") from None
        self._check_header(header)
        key = self._keys.get(header["kid"])
        if key is None:
            raise InvalidCredential("token signed by an unknown or retired key")
        if header["alg"] != key.alg:
            raise InvalidCredential("token algorithm not allowed")
        try:
            decoded = jwt.decode(credential, key.key, algorithms=[key.alg])
        except JoseError:
            raise InvalidCredential("token signature invalid") from None
        except (ValueError, TypeError):
            raise InvalidCredential("malformed token") from None
        return self._principal_from_claims(decoded.claims, now)

    @staticmethod
    def _check_header(header: Mapping[str, Any]) -> None:
        if not isinstance(header.get("alg"), str):
            raise InvalidCredential("malformed token header")
        if header["alg"].lower() == "none":
            raise InvalidCredential("token algorithm not allowed")
        if _KEY_BEARING_HEADERS & header.keys():
            raise InvalidCredential("token headers that carry or point to keys are not accepted")
        if not header.keys() <= _ALLOWED_HEADERS:
            raise InvalidCredential("token header has unsupported parameters")
        if not isinstance(header.get("kid"), str):
            raise InvalidCredential("token header lacks a key id")

    def _principal_from_claims(self, claims: Mapping[str, Any], now: float) -> Principal:
        missing = [name for name in REQUIRED_CLAIMS if name not in claims]
        if missing:
            raise InvalidCredential(f"token lacks required claims: {', '.join(missing)}")
        if claims["iss"] != self._issuer:
            raise InvalidCredential("token issuer not accepted")
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        if self._audience not in audiences:
            raise InvalidCredential("token audience does not match this server")
        exp, iat, nbf = claims["exp"], claims["iat"], claims.get("nbf", claims["iat"])
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (exp, iat, nbf)):
            raise InvalidCredential("token time claims must be integers")
        if now > exp + self._leeway:
            raise InvalidCredential("token expired")
        if nbf > now + self._leeway:
            raise InvalidCredential("token not yet valid")
        if iat > now + self._leeway:
            raise InvalidCredential("token issued in the future")
        if exp - iat > self._max_lifetime:
            raise InvalidCredential("token lifetime exceeds the maximum allowed")
        tenant_id, subject, jti = claims["tenant_id"], claims["sub"], claims["jti"]
        if not is_valid_tenant_id(tenant_id):
            raise InvalidCredential("token tenant_id is invalid")
        if not isinstance(subject, str) or not subject or len(subject) > 256 or not subject.isprintable():
            raise InvalidCredential("token subject is invalid")
        if not isinstance(jti, str) or not 0 < len(jti) <= 128:
            raise InvalidCredential("token jti is invalid")
        tools = claims["allowed_tools"]
        if (
            not isinstance(tools, list)
            or len(tools) > _MAX_TOOLS
            or not all(is_valid_tool_name(tool) for tool in tools)
        ):
            raise InvalidCredential("token allowed_tools must be a list of tool names")
        prefix = claims.get("resource_prefix")
        if prefix is not None:
            if not isinstance(prefix, str):
                raise InvalidCredential("token resource_prefix is invalid")
            try:
                prefix = normalize_prefix(prefix)
            except PathRejected:
                raise InvalidCredential("token resource_prefix is invalid") from None
        return Principal(
            issuer=self._issuer,
            tenant_id=tenant_id,
            subject=subject,
            allowed_tools=frozenset(tools),
            token_id=jti,
            expires_at=exp,
            issued_at=iat,
            resource_prefix=prefix or None,
            credential_kind="jwt",
        )
