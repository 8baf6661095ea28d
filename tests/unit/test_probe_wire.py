"""The probe's offline parts: replies read from JSON or SSE, and the tokens it derives."""

from __future__ import annotations

import json
import time

from joserfc import jwt
from joserfc.jwk import OKPKey

from tenantry.probe.tokens import derived_tokens, split_jwt
from tenantry.probe.wire import Reply, parse_body


def genuine() -> tuple[str, OKPKey]:
    key = OKPKey.generate_key("Ed25519", auto_kid=True)
    now = int(time.time())
    claims = {"sub": "alice", "tenant_id": "acme", "iat": now, "exp": now + 600, "allowed_tools": ["whoami"]}
    return jwt.encode({"alg": "EdDSA", "kid": key.kid}, claims, key, algorithms=["EdDSA"]), key


def test_sse_and_json_bodies_give_the_same_message() -> None:
    message = {"jsonrpc": "2.0", "id": 1, "result": {"tools": []}}
    sse = f"event: message\ndata: {json.dumps(message)}\n\n"
    assert parse_body("text/event-stream", sse) == message
    assert parse_body("application/json", json.dumps(message)) == message
    assert parse_body("text/event-stream", "data: {not json}\n\n") is None
    assert parse_body("application/json", "<html>") is None


def test_a_tool_error_is_a_refusal_and_a_result_is_not() -> None:
    served = Reply(200, {}, {"result": {"content": []}}, "")
    tool_error = Reply(200, {}, {"result": {"isError": True, "content": [{"type": "text", "text": "no"}]}}, "")
    unauthorised = Reply(401, {}, {"error": {"code": -32001, "message": "x"}}, "")
    assert served.ok and tool_error.refused and unauthorised.refused


def test_refusals_that_differ_only_in_the_name_look_alike() -> None:
    def refusal(name: str) -> Reply:
        error = {"code": -32602, "message": f"unknown tool {name}", "data": {"code": "tool_unavailable"}}
        return Reply(200, {}, {"error": error}, "")

    assert refusal("secret_tool").fingerprint("secret_tool") == refusal("nope").fingerprint("nope")
    other = Reply(200, {}, {"error": {"code": -32602, "message": "not granted", "data": {"code": "x"}}}, "")
    assert other.fingerprint("secret_tool") != refusal("nope").fingerprint("nope")


def test_derived_tokens_are_each_invalid_in_one_way() -> None:
    token, key = genuine()
    parts = split_jwt(token)
    assert parts is not None
    header, _, signature = parts
    jwks = {"keys": [key.as_dict(private=False)]}
    variants = derived_tokens(token, other_tenant="globex", jwks=jwks)
    assert all(v is not None for v in variants.values()) and len(variants) == 14
    made = {name: v[1] for name, v in variants.items() if v is not None}
    assert token not in made.values()
    tampered = split_jwt(made["tampered_tenant"])
    assert tampered is not None and tampered[1]["tenant_id"] == "globex" and tampered[2] == signature
    none, swapped = split_jwt(made["alg_none"]), split_jwt(made["kid_swap"])
    assert none is not None and none[0]["alg"] == "none" and made["alg_none"].endswith(".")
    assert swapped is not None and swapped[0]["kid"] != header["kid"]
    assert made["signature_stripped"] == token.rsplit(".", 1)[0] + "."


def test_key_confusion_variants_need_the_published_keys() -> None:
    token, _ = genuine()
    variants = derived_tokens(token, other_tenant="globex", jwks=None)
    assert variants["hs256_public_key"] is None and variants["hs256_public_jwk"] is None
