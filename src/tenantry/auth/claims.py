"""The JWT checks every verifier shares (built-in issuer and external identity providers)."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

from joserfc import jws
from joserfc.errors import JoseError

from tenantry.core.errors import InvalidCredential
from tenantry.core.ids import is_valid_tool_name
from tenantry.core.paths import PathRejected, normalize_prefix

__all__ = [
    "KEY_BEARING_HEADERS",
    "read_header",
    "peek_issuer",
    "check_header",
    "check_time_claims",
    "check_audience",
    "parse_tool_list",
    "parse_resource_prefix",
    "check_subject",
]

KEY_BEARING_HEADERS = frozenset({"jwk", "jku", "x5u", "x5c"})
_ALLOWED_HEADERS = frozenset({"alg", "kid", "typ", "cty"})
_MAX_TOOLS = 1024


def read_header(credential: str, max_bytes: int) -> dict[str, Any]:
    """The protected header of a compact JWS, unverified.

    :raises InvalidCredential: too large or not a compact JWS.
    """
    if len(credential) > max_bytes:
        raise InvalidCredential("token too large")
    if credential.count(".") != 2:
        raise InvalidCredential("malformed token: expected a signed JWT")
    try:
        return dict(jws.extract_compact(credential.encode("ascii")).headers())
    except (JoseError, ValueError, UnicodeError):
        raise InvalidCredential("malformed token") from None


def peek_issuer(credential: str) -> str | None:
    """The unverified ``iss`` claim, only to choose which verifier checks the token."""
    try:
        payload = credential.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, UnicodeError):
        return None
    issuer = claims.get("iss") if isinstance(claims, dict) else None
    return issuer if isinstance(issuer, str) else None


def check_header(header: Mapping[str, Any], allowed_algs: frozenset[str], *, require_kid: bool = True) -> None:
    """Refuse ``none``, algorithms off the list, and headers that carry or point to keys.

    :raises InvalidCredential: with the specific reason.
    """
    alg = header.get("alg")
    if not isinstance(alg, str):
        raise InvalidCredential("malformed token header")
    if alg.lower() == "none" or alg not in allowed_algs:
        raise InvalidCredential("token algorithm not allowed")
    if KEY_BEARING_HEADERS & header.keys():
        raise InvalidCredential("token headers that carry or point to keys are not accepted")
    if not header.keys() <= _ALLOWED_HEADERS:
        raise InvalidCredential("token header has unsupported parameters")
    kid = header.get("kid")
    if (require_kid or kid is not None) and not isinstance(kid, str):
        raise InvalidCredential("token header lacks a key id")


def check_time_claims(
    claims: Mapping[str, Any], now: float, *, leeway: int, max_lifetime: int, expiry_leeway: int | None = None
) -> tuple[int, int]:
    """Check ``exp``, ``nbf``, ``iat`` and the lifetime; returns ``(exp, iat)``.

    :param leeway: seconds of clock skew tolerated for ``nbf`` and ``iat`` (and ``exp`` unless
        ``expiry_leeway`` is given).
    :param expiry_leeway: seconds a token stays valid after ``exp``: ``0`` for tokens of our own
        issuer, which shares the verifier's clock.
    :raises InvalidCredential: with the specific reason.
    """
    exp, iat = claims.get("exp"), claims.get("iat")
    nbf = claims.get("nbf", iat)
    if exp is None or iat is None:
        missing = ", ".join(name for name in ("exp", "iat") if claims.get(name) is None)
        raise InvalidCredential(f"token lacks required claims: {missing}")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (exp, iat, nbf)):
        raise InvalidCredential("token time claims must be integers")
    if now >= exp + (leeway if expiry_leeway is None else expiry_leeway):
        raise InvalidCredential("token expired")
    if nbf > now + leeway:
        raise InvalidCredential("token not yet valid")
    if iat > now + leeway:
        raise InvalidCredential("token issued in the future")
    if exp - iat > max_lifetime:
        raise InvalidCredential("token lifetime exceeds the maximum allowed")
    return exp, iat


def check_audience(claims: Mapping[str, Any], accepted: frozenset[str]) -> None:
    """:raises InvalidCredential: when no ``aud`` value is one this server accepts."""
    aud = claims.get("aud")
    audiences = aud if isinstance(aud, list) else [aud]
    if not any(isinstance(a, str) and a in accepted for a in audiences):
        raise InvalidCredential("token audience does not match this server")


def check_subject(subject: object) -> str:
    if not isinstance(subject, str) or not subject or len(subject) > 256 or not subject.isprintable():
        raise InvalidCredential("token subject is invalid")
    return subject


def parse_tool_list(value: object, *, claim: str = "allowed_tools", allow_string: bool = False) -> frozenset[str]:
    """A list of tool names (or, with ``allow_string``, a string of them separated by spaces or commas).

    :raises InvalidCredential: when it is not, or names an invalid tool.
    """
    if allow_string and isinstance(value, str):
        value = value.replace(",", " ").split()
    if not isinstance(value, list) or len(value) > _MAX_TOOLS or not all(is_valid_tool_name(t) for t in value):
        raise InvalidCredential(f"token {claim} must be a list of tool names")
    return frozenset(value)


def parse_resource_prefix(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidCredential("token resource_prefix is invalid")
    try:
        return normalize_prefix(value) or None
    except PathRejected:
        raise InvalidCredential("token resource_prefix is invalid") from None
