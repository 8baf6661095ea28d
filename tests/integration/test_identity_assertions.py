"""Enterprise-managed authorization: identity assertions (ID-JAG) exchanged at ``/oauth/token``.

A real OpenID provider (npm ``oidc-provider``) signs the assertions with the key it publishes
in its JWKS; Tenantry fetches that JWKS itself. The client authenticates with a tenant API key
(``client_id`` = key id), presents the assertion with the RFC 7523 JWT-bearer grant and gets a
short-lived Tenantry token for the assertion's subject. Every refusal has a positive control
right beside it: the same client with a correct assertion is served.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest
import redis
from joserfc import jwt
from joserfc.jwk import import_key
from mcp import Client
from mcp.client.auth.extensions.identity_assertion import IdentityAssertionOAuthProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken

from tests.support import web
from tests.support.idp import RunningIdp, generate_private_jwk, start_idp
from tests.support.rpc import modern_call
from tests.support.server import RunningServer, free_port, start_server

pytestmark = pytest.mark.idp

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
REDIS = "async+redis://127.0.0.1:6379/0"
ACCOUNTS = {
    "alice": {"org_id": "acme", "allowed_tools": ["whoami", "query_crm", "send_email"]},
    "bob": {"org_id": "globex", "allowed_tools": ["whoami"]},
}


@dataclass
class Client_:
    key: str

    @property
    def key_id(self) -> str:
        return self.key.split("_")[-2]


@dataclass
class Deployment:
    server: RunningServer
    idp: RunningIdp
    acme: Client_
    globex: Client_

    def exchange(self, client: Client_, assertion: str, **extra: str) -> httpx2.Response:
        form = {"grant_type": JWT_BEARER, "assertion": assertion, "client_id": client.key_id,
                "client_secret": client.key, **extra}  # fmt: skip
        return web.post(self.server.base_url + "/oauth/token", data=form, timeout=10)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    tmp = tmp_path_factory.mktemp("id-jag")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    idp = start_idp(
        tmp / "idp",
        clients=[],
        resource=base + "/mcp",
        id_jag={"audience": base, "resource": base + "/mcp", "accounts": ACCOUNTS},
    )
    config = tmp / "tenantry.toml"
    config.write_text(
        f"""
[[identity_providers]]
name = "corp"
issuer = "{idp.issuer}"
tenant_claim = "org_id"
tenants = ["acme", "globex"]
tools_claim = "allowed_tools"
identity_assertions = true
"""
    )
    server = start_server(tmp / "data", config=config, port=port)
    try:
        acme = Client_(server.cli("apikey", "create", "--tenant", "acme", "--tools", "whoami,query_crm").stdout.strip())
        globex = Client_(server.cli("apikey", "create", "--tenant", "globex").stdout.strip())
        yield Deployment(server, idp, acme, globex)
    finally:
        server.stop()
        idp.stop()


def claims_of(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def assert_invalid_grant(response: httpx2.Response, reason: str) -> None:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "invalid_grant", body
    assert reason in body["error_description"], body
    assert "access_token" not in body


# -- accepted ----------------------------------------------------------------------------------


def test_authorization_server_metadata_offers_the_jwt_bearer_grant(deployment: Deployment) -> None:
    metadata = web.get(deployment.server.base_url + "/.well-known/oauth-authorization-server", timeout=5).json()
    assert metadata["grant_types_supported"] == ["client_credentials", JWT_BEARER]
    assert metadata["authorization_grant_profiles_supported"] == ["urn:ietf:params:oauth:grant-profile:id-jag"]


def test_an_assertion_is_exchanged_for_a_short_lived_token_of_its_subject(deployment: Deployment) -> None:
    assertion = deployment.idp.id_jag(deployment.acme.key_id, "alice", claims={"exp": int(time.time()) + 60})
    response = deployment.exchange(deployment.acme, assertion)
    assert response.status_code == 200, response.text
    body = response.json()
    claims = claims_of(body["access_token"])
    assert (claims["tenant_id"], claims["sub"], claims["iss"]) == ("acme", "corp:alice", deployment.server.base_url)
    # The assertion's tools ∩ the key's grant (send_email is not the key's) ∩ the tenant's grants.
    assert claims["allowed_tools"] == ["query_crm", "whoami"]
    # Never longer than the assertion.
    assert claims["exp"] <= claims_of(assertion)["exp"] and body["expires_in"] <= 60
    who = modern_call(
        deployment.server.mcp_url, body["access_token"], "tools/call", {"name": "whoami", "arguments": {}}
    )
    assert who.status_code == 200 and '"subject":"corp:alice"' in who.text.replace(" ", "")
    out = deployment.server.data_dir.parent / "acme-audit.jsonl"
    deployment.server.cli("audit", "export", "--tenant", "acme", "--out", str(out))
    issued = [r for r in map(json.loads, out.read_text().splitlines()) if r["event_type"] == "token_issued"]
    assert any(r["detail"].get("assertion_jti") == claims_of(assertion)["jti"] for r in issued)


class Storage:
    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return None

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        pass


@pytest.mark.anyio
@pytest.mark.parametrize("method", ["client_secret_post", "client_secret_basic"])
async def test_the_sdk_identity_assertion_client_gets_a_session_of_the_subject(
    deployment: Deployment, method: str
) -> None:
    asked: list[tuple[str, str]] = []

    async def assertion_for(audience: str, resource: str) -> str:
        asked.append((audience, resource))
        return deployment.idp.id_jag(deployment.acme.key_id, "alice")

    auth = IdentityAssertionOAuthProvider(
        server_url=deployment.server.mcp_url,
        storage=Storage(),
        client_id=deployment.acme.key_id,
        client_secret=deployment.acme.key,
        issuer=deployment.server.base_url,
        assertion_provider=assertion_for,
        token_endpoint_auth_method=method,  # type: ignore[arg-type]
    )
    # The SDK's metadata model requires authorization_endpoint, which RFC 8414 §2 does not for a
    # server with no grant that uses it (ours: client_credentials and jwt-bearer only). Everything
    # after metadata discovery is the SDK's own flow.
    metadata = web.get(deployment.server.base_url + "/.well-known/oauth-authorization-server", timeout=5).json()
    assert "authorization_endpoint" not in metadata
    auth._token_endpoint = metadata["token_endpoint"]
    async with (
        web.AsyncClient(auth=auth, timeout=30) as http,
        Client(streamable_http_client(deployment.server.mcp_url, http_client=http), cache=None) as client,
    ):
        who = (await client.call_tool("whoami", {})).structured_content
    assert (who["tenant_id"], who["subject"]) == ("acme", "corp:alice")
    assert asked == [(deployment.server.base_url, deployment.server.mcp_url)]


# -- refused (each beside its positive control) ------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"typ": "JWT"}, "typ header must be 'oauth-id-jag+jwt'"),
        ({"typ": "at+jwt"}, "typ header must be 'oauth-id-jag+jwt'"),
        ({"aud": "https://another-as.test"}, "audience does not match"),
        ({"resource": "https://elsewhere.test/mcp"}, "another resource"),
        ({"exp": -100, "iat": -400}, "expired"),
        ({"exp": 3600}, "lifetime"),
        ({"client_id": None}, "lacks the client_id claim"),
        ({"jti": None}, "lacks a jti"),
        ({"org_id": None}, "lacks the tenant claim"),
        ({"org_id": "initech"}, "may not speak for"),
        ({"sub": "a" * 256}, "subject is too long"),  # <provider>:<sub> must fit our subjects
    ],
)
def test_a_wrong_assertion_is_refused(deployment: Deployment, overrides: dict, reason: str) -> None:
    idp, acme = deployment.idp, deployment.acme
    assert deployment.exchange(acme, idp.id_jag(acme.key_id, "alice")).status_code == 200  # control
    now = int(time.time())
    claims = {k: (now + v if k in ("exp", "iat") else v) for k, v in overrides.items() if k != "typ"}
    assertion = idp.id_jag(acme.key_id, "alice", typ=overrides.get("typ"), claims=claims)
    assert_invalid_grant(deployment.exchange(acme, assertion), reason)


def test_an_assertion_for_another_client_is_refused(deployment: Deployment) -> None:
    idp, acme, globex = deployment.idp, deployment.acme, deployment.globex
    for_globex = idp.id_jag(globex.key_id, "bob")
    assert_invalid_grant(deployment.exchange(acme, for_globex), "issued to another client")
    assert deployment.exchange(globex, idp.id_jag(globex.key_id, "bob")).status_code == 200  # control


def test_a_client_of_one_tenant_cannot_exchange_an_assertion_naming_another(deployment: Deployment) -> None:
    """The acme client with an assertion for itself that names globex's user: refused."""
    idp, acme = deployment.idp, deployment.acme
    assert_invalid_grant(deployment.exchange(acme, idp.id_jag(acme.key_id, "bob")), "names another tenant")
    assert deployment.exchange(acme, idp.id_jag(acme.key_id, "alice")).status_code == 200  # control


def test_a_replayed_assertion_is_refused(deployment: Deployment) -> None:
    assertion = deployment.idp.id_jag(deployment.acme.key_id, "alice")
    assert deployment.exchange(deployment.acme, assertion).status_code == 200
    assert_invalid_grant(deployment.exchange(deployment.acme, assertion), "already used")


def test_a_tampered_assertion_is_refused(deployment: Deployment) -> None:
    assertion = deployment.idp.id_jag(deployment.acme.key_id, "alice")
    header, _, signature = assertion.split(".")
    claims = claims_of(assertion) | {"allowed_tools": ["whoami", "query_crm", "read_file"]}
    forged_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    assert_invalid_grant(deployment.exchange(deployment.acme, f"{header}.{forged_payload}.{signature}"), "signature")
    assert deployment.exchange(deployment.acme, assertion).status_code == 200  # control: the original


def test_an_assertion_of_an_unknown_issuer_is_refused(deployment: Deployment) -> None:
    private = generate_private_jwk("ES256", "stranger")
    now = int(time.time())
    claims = claims_of(deployment.idp.id_jag(deployment.acme.key_id, "alice"))
    header = {"alg": "ES256", "kid": "stranger", "typ": "oauth-id-jag+jwt"}
    for issuer, reason in ((deployment.idp.issuer, "signature"), ("http://127.0.0.1:1", "issuer not accepted")):
        forged = jwt.encode(header, claims | {"iss": issuer, "jti": f"x{now}{issuer}"}, import_key(private))
        response = deployment.exchange(deployment.acme, forged)
        assert response.status_code == 400 and response.json()["error"] == "invalid_grant", response.text
        assert reason in response.json()["error_description"] or "key" in response.json()["error_description"]
    assert (
        deployment.exchange(deployment.acme, deployment.idp.id_jag(deployment.acme.key_id, "alice")).status_code == 200
    )


def test_the_client_must_authenticate(deployment: Deployment) -> None:
    assertion = deployment.idp.id_jag(deployment.acme.key_id, "alice")
    response = deployment.exchange(deployment.acme, assertion, client_secret=deployment.acme.key[:-2] + "xx")
    assert response.status_code == 401 and response.json()["error"] == "invalid_client"
    assert deployment.exchange(deployment.acme, assertion).status_code == 200  # not consumed by the refusal


def test_an_assertion_is_not_an_access_token(deployment: Deployment) -> None:
    assertion = deployment.idp.id_jag(deployment.acme.key_id, "alice")
    response = modern_call(deployment.server.mcp_url, assertion, "tools/list")
    assert response.status_code == 401, response.text
    assert "identity assertion is not an access token" in response.json()["error"]["message"]


@pytest.mark.redis
def test_a_replay_is_refused_with_the_shared_ledger_of_a_redis_deployment(
    deployment: Deployment, tmp_path: Path, redis_available: None
) -> None:
    config = tmp_path / "tenantry.toml"
    config.write_text((deployment.server.data_dir.parent / "tenantry.toml").read_text())
    env = {"TENANTRY_LIMITS__STORAGE": REDIS, "TENANTRY_LIMITS__KEY_PREFIX": f"t-{os.urandom(6).hex()}"}
    server = start_server(tmp_path / "data", config=config, env=env)
    try:
        client = Client_(server.cli("apikey", "create", "--tenant", "acme", "--tools", "whoami").stdout.strip())
        claims = {"aud": server.base_url, "resource": server.mcp_url}
        assertion = deployment.idp.id_jag(client.key_id, "alice", claims=claims)
        form = {"grant_type": JWT_BEARER, "assertion": assertion, "client_id": client.key_id,
                "client_secret": client.key}  # fmt: skip
        first = web.post(server.base_url + "/oauth/token", data=form, timeout=10)
        assert first.status_code == 200, first.text
        # The use is recorded in Redis (where every replica sees it), not only in this process.
        used = redis.Redis(host="127.0.0.1", port=6379).keys(env["TENANTRY_LIMITS__KEY_PREFIX"] + "*id-jag*")
        assert len(used) == 1, used
        assert_invalid_grant(web.post(server.base_url + "/oauth/token", data=form, timeout=10), "already used")
    finally:
        server.stop()


def test_revoking_the_client_key_revokes_the_tokens_exchanged_for_its_assertions(deployment: Deployment) -> None:
    """`apikey revoke` revokes every token exchanged for the key, those of the jwt-bearer grant too
    (whose subject is the assertion's user, not the key)."""
    server, idp = deployment.server, deployment.idp
    doomed = Client_(server.cli("apikey", "create", "--tenant", "acme", "--tools", "whoami").stdout.strip())
    kept = deployment.exchange(deployment.acme, idp.id_jag(deployment.acme.key_id, "alice"))
    exchanged = deployment.exchange(doomed, idp.id_jag(doomed.key_id, "alice"))
    assert exchanged.status_code == 200 and kept.status_code == 200, (exchanged.text, kept.text)
    call = {"name": "whoami", "arguments": {}}
    assert modern_call(server.mcp_url, exchanged.json()["access_token"], "tools/call", call).status_code == 200
    server.cli("apikey", "revoke", doomed.key_id)
    deadline = time.time() + 5
    while time.time() < deadline:
        refused = modern_call(server.mcp_url, exchanged.json()["access_token"], "tools/call", call)
        if refused.status_code == 401:
            break
        time.sleep(0.2)
    assert refused.status_code == 401, refused.text
    # Positive control: the same user's token exchanged through another key still works.
    assert modern_call(server.mcp_url, kept.json()["access_token"], "tools/call", call).status_code == 200
