"""Forged, tampered, expired and misdirected tokens: each gets 401 with an RFC 9728 challenge."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import httpx2
import pytest
from joserfc import jwt
from joserfc.jwk import OKPKey

from tests.support import web
from tests.support.rpc import modern_call, post, request
from tests.support.server import RunningServer, run_cli, start_server


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def parts(token: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    header, payload, signature = token.split(".")
    return json.loads(unb64(header)), json.loads(unb64(payload)), signature


def encode_unsigned(header: dict[str, Any], payload: dict[str, Any]) -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"


@pytest.fixture(scope="module")
def jwks(server: RunningServer) -> dict[str, Any]:
    return web.get(server.base_url + "/.well-known/jwks.json").json()


@pytest.fixture(scope="module")
def genuine_claims(acme_token: str) -> dict[str, Any]:
    return parts(acme_token)[1]


def forge(header: dict[str, Any], claims: dict[str, Any], key: Any, alg: str) -> str:
    return jwt.encode({"alg": alg, **header}, claims, key, algorithms=[alg])


def attacks(server: RunningServer, acme_token: str, jwks: dict[str, Any], claims: dict[str, Any]) -> dict[str, str]:
    kid = jwks["keys"][0]["kid"]
    attacker = OKPKey.generate_key("Ed25519", auto_kid=True)
    widened = {**claims, "allowed_tools": [*claims["allowed_tools"], "globex_forecast", "admin"]}
    header, payload, signature = acme_token.split(".")
    tampered = {**claims, "tenant_id": "globex"}
    public_x = unb64(jwks["keys"][0]["x"])
    hs_input = encode_unsigned({"alg": "HS256", "kid": kid, "typ": "JWT"}, widened)
    hs_signature = b64(hmac.new(public_x, hs_input.encode(), hashlib.sha256).digest())
    hs_json_input = encode_unsigned({"alg": "HS256", "kid": kid}, widened)
    hs_json_signature = b64(
        hmac.new(json.dumps(jwks["keys"][0]).encode(), hs_json_input.encode(), hashlib.sha256).digest()
    )
    return {
        "alg_none": encode_unsigned({"alg": "none", "kid": kid, "typ": "JWT"}, widened) + ".",
        "alg_none_uppercase": encode_unsigned({"alg": "NONE", "kid": kid}, widened) + ".",
        "hs256_with_public_key": f"{hs_input}.{hs_signature}",
        "hs256_with_public_jwk_json": f"{hs_json_input}.{hs_json_signature}",
        "forged_extra_allowed_tools_attacker_key": forge({"kid": attacker.kid}, widened, attacker, "EdDSA"),
        "forged_with_our_kid_attacker_key": forge({"kid": kid}, widened, attacker, "EdDSA"),
        "embedded_jwk_header": forge({"kid": kid, "jwk": attacker.as_dict(private=False)}, widened, attacker, "EdDSA"),
        "jku_header": forge({"kid": attacker.kid, "jku": "http://127.0.0.1:9/jwks.json"}, widened, attacker, "EdDSA"),
        "x5u_header": forge({"kid": attacker.kid, "x5u": "http://127.0.0.1:9/cert"}, widened, attacker, "EdDSA"),
        "tampered_tenant_id": f"{header}.{b64(json.dumps(tampered).encode())}.{signature}",
        "tampered_allowed_tools": f"{header}.{b64(json.dumps(widened).encode())}.{signature}",
        "signature_stripped": f"{header}.{payload}.",
        "garbage": "not-a-token",
        "random_base64": b64(b"x" * 90),
        "five_part_jwe_shape": "a.b.c.d.e",
        "oversized": "a" * 20_000,
    }


ATTACK_NAMES = [
    "alg_none",
    "alg_none_uppercase",
    "hs256_with_public_key",
    "hs256_with_public_jwk_json",
    "forged_extra_allowed_tools_attacker_key",
    "forged_with_our_kid_attacker_key",
    "embedded_jwk_header",
    "jku_header",
    "x5u_header",
    "tampered_tenant_id",
    "tampered_allowed_tools",
    "signature_stripped",
    "garbage",
    "random_base64",
    "five_part_jwe_shape",
    "oversized",
]


def assert_unauthorized(response: httpx2.Response, server: RunningServer) -> None:
    assert response.status_code == 401, response.text
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    assert f'resource_metadata="{server.base_url}/.well-known/oauth-protected-resource/mcp"' in challenge
    assert response.json()["error"]["data"]["code"] == "invalid_credential"
    assert "globex-canary" not in response.text and "Traceback" not in response.text


def call_whoami(server: RunningServer, token: str | None, *, modern: bool) -> httpx2.Response:
    if modern:
        return modern_call(server.mcp_url, token, "tools/call", {"name": "whoami", "arguments": {}})
    return post(server.mcp_url, request("tools/call", {"name": "whoami", "arguments": {}}), token=token)


@pytest.mark.parametrize("modern", [False, True], ids=["handshake", "sessionless"])
@pytest.mark.parametrize("attack", ATTACK_NAMES)
def test_forged_token_is_rejected(
    server: RunningServer,
    acme_token: str,
    jwks: dict[str, Any],
    genuine_claims: dict[str, Any],
    attack: str,
    modern: bool,
) -> None:
    token = attacks(server, acme_token, jwks, genuine_claims)[attack]
    assert_unauthorized(call_whoami(server, token, modern=modern), server)


@pytest.mark.parametrize("modern", [False, True], ids=["handshake", "sessionless"])
def test_genuine_token_is_accepted_positive_control(server: RunningServer, acme_token: str, modern: bool) -> None:
    response = call_whoami(server, acme_token, modern=modern)
    if not modern:  # the handshake era needs initialize first; the credential itself passed
        assert response.status_code != 401, response.text
    else:
        assert response.status_code == 200
        assert response.json()["result"]["structuredContent"]["tenant_id"] == "acme"


@pytest.mark.parametrize("header", [None, "", "Bearer", "Basic YWxpY2U6cHc=", "bearer  x y", "Token abc", "Bearer a,b"])
def test_missing_or_malformed_authorization_is_401(server: RunningServer, header: str | None) -> None:
    headers = {} if header is None else {"Authorization": header}
    response = post(server.mcp_url, request("tools/list"), headers=headers)
    assert_unauthorized(response, server)


def test_expired_token_is_rejected(server: RunningServer) -> None:
    token = server.token("acme", "alice", ttl="1s")
    time.sleep(2.1)  # the attack server runs with zero clock leeway
    response = call_whoami(server, token, modern=True)
    assert_unauthorized(response, server)
    assert "expired" in response.json()["error"]["message"]


def test_token_for_another_audience_with_the_right_key_is_rejected(server: RunningServer) -> None:
    other = run_cli(
        "token",
        "issue",
        "--tenant",
        "acme",
        "--sub",
        "alice",
        data_dir=server.data_dir,
        env={"TENANTRY_PUBLIC_URL": "https://other-deployment.example"},
    ).stdout.strip()
    assert parts(other)[1]["aud"] == "https://other-deployment.example/mcp"
    response = call_whoami(server, other, modern=True)
    assert_unauthorized(response, server)


def test_token_from_another_deployment_is_rejected(
    server: RunningServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    other_dir = tmp_path_factory.mktemp("other") / "data"
    start_server(other_dir, env={"TENANTRY_PUBLIC_URL": server.base_url}).stop()  # another deployment's store
    token = run_cli(
        "token",
        "issue",
        "--tenant",
        "acme",
        "--sub",
        "alice",
        data_dir=other_dir,
        env={"TENANTRY_PUBLIC_URL": server.base_url},
    ).stdout.strip()
    assert_unauthorized(call_whoami(server, token, modern=True), server)


def test_token_lifetime_above_the_maximum_cannot_be_issued(server: RunningServer) -> None:
    result = server.cli("token", "issue", "--tenant", "acme", "--sub", "alice", "--ttl", "2h", check=False)
    assert result.returncode == 2
    assert "exceeds the maximum token lifetime" in result.stderr
    assert result.stdout == ""


def test_rejections_are_audited_without_the_token(
    server: RunningServer, acme_token: str, jwks: dict[str, Any], genuine_claims: dict[str, Any]
) -> None:
    forged = attacks(server, acme_token, jwks, genuine_claims)["forged_with_our_kid_attacker_key"]
    response = call_whoami(server, forged, modern=True)
    request_id = response.headers["x-request-id"]
    rejected = [e for e in server.audit_records("_system") if e["request_id"] == request_id]
    assert [e["event_type"] for e in rejected] == ["connection_rejected"]
    assert "signature" in rejected[0]["reason"]
    everything = json.dumps(server.audit_records()) + server.logs()
    assert forged not in everything and acme_token not in everything
