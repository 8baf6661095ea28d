"""Tokens derived from a genuine one: forged, re-signed and tampered, never validly signed.

Each variant keeps the genuine token's claims (so only the one thing under test is wrong)
and widens them where that makes acceptance worse: another tenant, more tools.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
import warnings
from typing import Any

from joserfc import jwt
from joserfc.errors import SecurityWarning
from joserfc.jwk import OKPKey

__all__ = ["JwtParts", "split_jwt", "derived_tokens", "b64url"]

# The attacker's keys are Ed25519 like the deployments' (joserfc flags the name, not a weakness).
warnings.filterwarnings("ignore", message="EdDSA is deprecated", category=SecurityWarning)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


JwtParts = tuple[dict[str, Any], dict[str, Any], str]


def split_jwt(token: str) -> JwtParts | None:
    """``(header, claims, signature)`` of a compact JWS, unverified; ``None`` if it is not one."""
    pieces = token.split(".")
    if len(pieces) != 3:
        return None
    try:
        header, claims = json.loads(_unb64(pieces[0])), json.loads(_unb64(pieces[1]))
    except ValueError:
        return None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        return None
    return header, claims, pieces[2]


def _unsigned(header: dict[str, Any], claims: dict[str, Any]) -> str:
    return f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"


def _hs256(header: dict[str, Any], claims: dict[str, Any], key: bytes) -> str:
    signing_input = _unsigned({**header, "alg": "HS256"}, claims)
    return f"{signing_input}.{b64url(hmac.new(key, signing_input.encode(), hashlib.sha256).digest())}"


def derived_tokens(token: str, *, other_tenant: str, jwks: dict[str, Any] | None) -> dict[str, tuple[str, str] | None]:
    """Variant id -> ``(description, token)``; ``None`` where the variant cannot be made
    (the HS256 key-confusion variants need the deployment's published keys)."""
    parts = split_jwt(token)
    assert parts is not None
    header, claims, signature = parts
    kid = header.get("kid", "probe")
    widened = dict(claims)
    tools = claims.get("allowed_tools")
    if isinstance(tools, list):
        widened["allowed_tools"] = [*tools, "probe_admin"]
    tenant_key = next((k for k in ("tenant_id", "tid", "org_id", "tenant") if k in claims), "tenant_id")
    foreign = {**claims, tenant_key: other_tenant}
    attacker = OKPKey.generate_key("Ed25519", auto_kid=True)
    genuine_header, genuine_payload = token.split(".")[:2]
    variants: dict[str, tuple[str, str] | None] = {
        "alg_none": ("alg none, no signature", _unsigned({**header, "alg": "none"}, widened) + "."),
        "alg_none_upper": ("alg NONE, no signature", _unsigned({**header, "alg": "NONE"}, widened) + "."),
        "random_key_same_kid": (
            "signed with a random Ed25519 key under the genuine kid",
            jwt.encode({"alg": "EdDSA", "kid": kid}, widened, attacker, algorithms=["EdDSA"]),
        ),
        "random_key_own_kid": (
            "signed with a random Ed25519 key under its own kid",
            jwt.encode({"alg": "EdDSA", "kid": attacker.kid}, widened, attacker, algorithms=["EdDSA"]),
        ),
        "embedded_jwk": (
            "random key, public half embedded in the header (jwk)",
            jwt.encode(
                {"alg": "EdDSA", "kid": kid, "jwk": attacker.as_dict(private=False)},
                widened,
                attacker,
                algorithms=["EdDSA"],
            ),
        ),
        "jku_header": (
            "random key, header points at the attacker's JWKS (jku)",
            jwt.encode(
                {"alg": "EdDSA", "kid": attacker.kid, "jku": "http://127.0.0.1:9/jwks.json"},
                widened,
                attacker,
                algorithms=["EdDSA"],
            ),
        ),
        "hs256_random_secret": ("HS256 with a random secret", _hs256(header, widened, secrets.token_bytes(32))),
        "kid_swap": (
            "header kid swapped, genuine signature kept",
            f"{b64url(json.dumps({**header, 'kid': 'probe-' + secrets.token_hex(4)}).encode())}"
            f".{genuine_payload}.{signature}",
        ),
        "tampered_tenant": (
            f"payload {tenant_key} changed to the other tenant, genuine signature kept",
            f"{genuine_header}.{b64url(json.dumps(foreign).encode())}.{signature}",
        ),
        "tampered_tools": (
            "payload allowed_tools widened, genuine signature kept",
            f"{genuine_header}.{b64url(json.dumps(widened).encode())}.{signature}",
        ),
        "tampered_expiry": (
            "payload exp moved a day later, genuine signature kept",
            f"{genuine_header}.{b64url(json.dumps({**claims, 'exp': int(time.time()) + 86400}).encode())}.{signature}",
        ),
        "signature_stripped": ("genuine header and payload, signature removed", f"{genuine_header}.{genuine_payload}."),
    }
    keys = [k for k in (jwks or {}).get("keys", []) if isinstance(k, dict)]
    public = next((k for k in keys if k.get("kid") == kid), keys[0] if keys else None)
    if public is None:
        variants["hs256_public_key"] = None
        variants["hs256_public_jwk"] = None
    else:
        raw = public.get("x") or public.get("n")
        material = _unb64(raw) if isinstance(raw, str) else json.dumps(public).encode()
        variants["hs256_public_key"] = (
            "HS256 keyed with the deployment's public key bytes (key confusion)",
            _hs256({**header, "kid": public.get("kid", kid)}, widened, material),
        )
        variants["hs256_public_jwk"] = (
            "HS256 keyed with the deployment's public JWK as JSON (key confusion)",
            _hs256({**header, "kid": public.get("kid", kid)}, widened, json.dumps(public).encode()),
        )
    return variants
