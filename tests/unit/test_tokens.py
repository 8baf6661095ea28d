"""The built-in issuer's tokens: every way a forged or unacceptable token must fail."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, OKPKey

from tenantry.auth.keys import KeyRing
from tenantry.auth.tokens import JwtVerifier, TokenIssuer
from tenantry.core.errors import InvalidCredential, UsageError

ISS = "http://127.0.0.1:8750"
AUD = "http://127.0.0.1:8750/mcp"


@pytest.fixture
def ring(tmp_path: Path) -> KeyRing:
    keys = KeyRing(tmp_path / "keys")
    keys.ensure()
    return keys


@pytest.fixture
def issuer(ring: KeyRing) -> TokenIssuer:
    return TokenIssuer(ring, issuer=ISS, audience=AUD, default_ttl=900, max_lifetime=3600)


@pytest.fixture
def verifier(ring: KeyRing) -> JwtVerifier:
    return JwtVerifier(ring, issuer=ISS, audience=AUD, max_lifetime=3600, leeway=30, max_token_bytes=8192)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {
        "iss": ISS,
        "aud": AUD,
        "sub": "alice",
        "tenant_id": "acme",
        "allowed_tools": ["whoami"],
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": "j1",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def sign_with_ring(ring: KeyRing, payload: dict[str, Any], **header: Any) -> str:
    key = ring.current()
    return jwt.encode({"alg": key.alg, "kid": key.kid, **header}, payload, key.key, algorithms=[key.alg])


def test_issued_token_verifies_with_its_claims(issuer: TokenIssuer, verifier: JwtVerifier) -> None:
    issued = issuer.issue(
        tenant_id="acme", subject="alice", allowed_tools=["whoami", "query_crm"], resource_prefix="r/"
    )
    principal = verifier.verify_sync(issued.token)
    assert principal.tenant_id == "acme"
    assert principal.subject == "alice"
    assert principal.allowed_tools == {"whoami", "query_crm"}
    assert principal.resource_prefix == "r"
    assert principal.issuer == ISS
    assert principal.expires_at - principal.issued_at == 900
    assert set(issued.claims) >= {"sub", "tenant_id", "allowed_tools", "exp", "iat", "iss", "aud", "jti"}


def test_signing_key_file_is_private(ring: KeyRing) -> None:
    assert ring.path.stat().st_mode & 0o777 == 0o600
    assert ring.path.parent.stat().st_mode & 0o777 == 0o700
    jwks = ring.jwks()
    assert [k["kid"] for k in jwks["keys"]] == [ring.current().kid]
    assert "d" not in jwks["keys"][0]
    assert jwks["keys"][0]["alg"] == "EdDSA" and jwks["keys"][0]["crv"] == "Ed25519"


def test_issue_refuses_a_lifetime_above_the_maximum(issuer: TokenIssuer) -> None:
    with pytest.raises(UsageError, match="exceeds the maximum token lifetime of 1h"):
        issuer.issue(tenant_id="acme", subject="a", allowed_tools=[], ttl=3601)


def test_alg_none_is_rejected(ring: KeyRing, verifier: JwtVerifier) -> None:
    header = {"alg": "none", "kid": ring.current().kid, "typ": "JWT"}
    token = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims()).encode())}."
    with pytest.raises(InvalidCredential, match="algorithm not allowed"):
        verifier.verify_sync(token)


@pytest.mark.parametrize("secret_form", ["raw_x", "jwk_json", "pem"])
def test_hs256_signed_with_the_public_key_is_rejected(ring: KeyRing, verifier: JwtVerifier, secret_form: str) -> None:
    public = ring.current().public_jwk()
    secret = {
        "raw_x": base64.urlsafe_b64decode(public["x"] + "=="),
        "jwk_json": json.dumps(public).encode(),
        "pem": ring.current().key.as_pem(private=False),
    }[secret_form]
    signing_input = (
        f"{b64(json.dumps({'alg': 'HS256', 'kid': public['kid']}).encode())}.{b64(json.dumps(claims()).encode())}"
    )
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    token = f"{signing_input}.{b64(signature)}"
    with pytest.raises(InvalidCredential, match="algorithm not allowed"):
        verifier.verify_sync(token)


@pytest.mark.parametrize("header_name", ["jwk", "jku", "x5u", "x5c"])
def test_key_bearing_headers_are_rejected(ring: KeyRing, verifier: JwtVerifier, header_name: str) -> None:
    attacker = OKPKey.generate_key("Ed25519")
    value: Any = {
        "jwk": attacker.as_dict(private=False),
        "jku": "http://127.0.0.1:9/jwks.json",
        "x5u": "http://127.0.0.1:9/cert.pem",
        "x5c": ["MIIB"],
    }[header_name]
    token = jwt.encode(
        {"alg": "EdDSA", "kid": ring.current().kid, header_name: value},
        claims(allowed_tools=["admin"]),
        attacker,
        algorithms=["EdDSA"],
    )
    with pytest.raises(InvalidCredential, match="carry or point to keys"):
        verifier.verify_sync(token)


def test_token_signed_by_an_unknown_key_is_rejected(verifier: JwtVerifier) -> None:
    attacker = OKPKey.generate_key("Ed25519", auto_kid=True)
    token = jwt.encode({"alg": "EdDSA", "kid": attacker.kid}, claims(), attacker, algorithms=["EdDSA"])
    with pytest.raises(InvalidCredential, match="unknown or retired key"):
        verifier.verify_sync(token)


def test_attacker_key_reusing_our_kid_is_rejected(ring: KeyRing, verifier: JwtVerifier) -> None:
    attacker = OKPKey.generate_key("Ed25519")
    token = jwt.encode(
        {"alg": "EdDSA", "kid": ring.current().kid}, claims(allowed_tools=["x", "y"]), attacker, algorithms=["EdDSA"]
    )
    with pytest.raises(InvalidCredential, match="signature invalid"):
        verifier.verify_sync(token)


def test_es256_with_our_kid_is_rejected(ring: KeyRing, verifier: JwtVerifier) -> None:
    attacker = ECKey.generate_key("P-256")
    token = jwt.encode({"alg": "ES256", "kid": ring.current().kid}, claims(), attacker, algorithms=["ES256"])
    with pytest.raises(InvalidCredential, match="algorithm not allowed"):
        verifier.verify_sync(token)


@pytest.mark.parametrize(
    "change",
    [{"tenant_id": "globex"}, {"allowed_tools": ["whoami", "globex_forecast"]}, {"sub": "root"}, {"exp": 4102444800}],
)
def test_tampered_payload_is_rejected(ring: KeyRing, verifier: JwtVerifier, change: dict[str, Any]) -> None:
    header, payload, signature = sign_with_ring(ring, claims()).split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=="))
    body.update(change)
    with pytest.raises(InvalidCredential, match="signature invalid"):
        verifier.verify_sync(f"{header}.{b64(json.dumps(body).encode())}.{signature}")


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"aud": "http://127.0.0.1:9999/mcp"}, "audience"),
        ({"aud": ["https://other.example/mcp"]}, "audience"),
        ({"iss": "https://evil.example"}, "issuer"),
        ({"exp": int(time.time()) - 120, "iat": int(time.time()) - 900, "nbf": int(time.time()) - 900}, "expired"),
        ({"nbf": int(time.time()) + 600}, "not yet valid"),
        ({"iat": int(time.time()) + 600, "exp": int(time.time()) + 900}, "issued in the future"),
        ({"exp": int(time.time()) + 7200}, "lifetime exceeds"),
        ({"tenant_id": "ACME"}, "tenant_id is invalid"),
        ({"tenant_id": "../globex"}, "tenant_id is invalid"),
        ({"allowed_tools": "whoami"}, "allowed_tools"),
        ({"allowed_tools": ["who ami"]}, "allowed_tools"),
        ({"exp": "soon"}, "integers"),
        ({"sub": ""}, "subject is invalid"),
        ({"resource_prefix": "../globex"}, "resource_prefix"),
        ({"jti": None}, "jti"),
        ({"tenant_id": None}, "tenant_id"),
        ({"allowed_tools": None}, "allowed_tools"),
        ({"sub": None}, "sub"),
        ({"aud": None}, "aud"),
    ],
)
def test_unacceptable_claims_are_rejected(
    ring: KeyRing, verifier: JwtVerifier, overrides: dict[str, Any], reason: str
) -> None:
    with pytest.raises(InvalidCredential, match=reason):
        verifier.verify_sync(sign_with_ring(ring, claims(**overrides)))


@pytest.mark.parametrize(
    "garbage",
    ["", "abc", "a.b", "a.b.c", "a.b.c.d.e", "eyJhbGciOiJFZERTQSJ9.e30.", "x" * 10_000, "é.é.é"],
)
def test_garbage_tokens_are_rejected(verifier: JwtVerifier, garbage: str) -> None:
    with pytest.raises(InvalidCredential):
        verifier.verify_sync(garbage)


def test_cached_verification_still_expires(issuer: TokenIssuer, verifier: JwtVerifier) -> None:
    issued = issuer.issue(tenant_id="acme", subject="a", allowed_tools=[], ttl=60)
    verifier.verify_sync(issued.token)
    verifier.verify_sync(issued.token)  # cache hit
    with pytest.raises(InvalidCredential, match="expired"):
        verifier.verify_sync(issued.token, now=time.time() + 120)


def test_a_retired_key_no_longer_verifies(ring: KeyRing, issuer: TokenIssuer, verifier: JwtVerifier) -> None:
    token = issuer.issue(tenant_id="acme", subject="a", allowed_tools=[]).token
    verifier.verify_sync(token)
    from dataclasses import replace

    ring.replace([replace(k, status="retired") for k in ring.all()])
    with pytest.raises(InvalidCredential, match="unknown or retired"):
        verifier.verify_sync(token)
