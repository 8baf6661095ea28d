"""Discovery documents, health, Origin/Host validation and cache scope, over real HTTP."""

from __future__ import annotations

import base64
import json

import pytest

from tests.support import web
from tests.support.rpc import modern_call, post, request
from tests.support.server import RunningServer


def test_protected_resource_metadata_rfc9728(server: RunningServer) -> None:
    for path in ("/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource/mcp"):
        doc = web.get(server.base_url + path).json()
        assert doc["resource"] == server.mcp_url
        assert doc["authorization_servers"] == [server.base_url]
        assert doc["bearer_methods_supported"] == ["header"]


def test_authorization_server_metadata_rfc8414(server: RunningServer) -> None:
    doc = web.get(server.base_url + "/.well-known/oauth-authorization-server").json()
    assert doc["issuer"] == server.base_url
    assert doc["jwks_uri"] == server.base_url + "/.well-known/jwks.json"


def test_jwks_publishes_the_key_that_signs_tokens(server: RunningServer) -> None:
    jwks = web.get(server.base_url + "/.well-known/jwks.json").json()
    token = server.token("acme", "alice")
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header["alg"] == "EdDSA"
    assert header["kid"] in {k["kid"] for k in jwks["keys"]}
    for key in jwks["keys"]:
        assert key["kty"] == "OKP" and key["crv"] == "Ed25519"
        assert "d" not in key  # never the private part
    key_file = server.data_dir / "keys" / "signing-keys.json"
    assert key_file.stat().st_mode & 0o777 == 0o600


def test_health_and_readiness(server: RunningServer) -> None:
    assert web.get(server.base_url + "/healthz").json() == {"status": "ok"}
    ready = web.get(server.base_url + "/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"tenant_store": True, "signing_keys": True, "audit_store": True}


@pytest.mark.parametrize(
    "origin", ["https://evil.example", "http://127.0.0.1:1", "null", "http://localhost.evil.example"]
)
def test_foreign_origin_is_403(server: RunningServer, origin: str) -> None:
    token = server.token("acme", "alice")
    response = post(server.mcp_url, request("tools/list"), token=token, headers={"Origin": origin})
    assert response.status_code == 403
    assert response.json()["error"]["data"]["code"] == "origin_not_allowed"


def test_own_origin_is_allowed(server: RunningServer) -> None:
    token = server.token("acme", "alice")
    response = modern_call(server.mcp_url, token, "tools/list", {}, headers={"Origin": server.base_url})
    assert response.status_code == 200


def test_foreign_origin_is_refused_before_authentication(server: RunningServer) -> None:
    response = post(server.mcp_url, request("tools/list"), headers={"Origin": "https://evil.example"})
    assert response.status_code == 403


def test_unexpected_host_header_is_421(server: RunningServer) -> None:
    token = server.token("acme", "alice")
    response = post(server.mcp_url, request("tools/list"), token=token, headers={"Host": "attacker.example"})
    assert response.status_code == 421


def test_tool_list_is_never_publicly_cacheable(server: RunningServer) -> None:
    token = server.token("acme", "alice")
    result = modern_call(server.mcp_url, token, "tools/list", {}).json()["result"]
    assert result["cacheScope"] == "private"
    assert result["ttlMs"] == 0


def test_401_challenge_names_the_metadata(server: RunningServer) -> None:
    response = post(server.mcp_url, request("tools/list"))
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == (
        'Bearer error="invalid_token", error_description="A bearer token is required", '
        f'resource_metadata="{server.base_url}/.well-known/oauth-protected-resource/mcp"'
    )
    assert response.headers["cache-control"] == "no-store"
