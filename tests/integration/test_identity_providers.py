"""External identity providers, against real OpenID providers (npm ``oidc-provider``) on 127.0.0.1.

Two providers: ``okta`` speaks for ``acme`` only, with tenant claim ``org_id`` and tools in
``allowed_tools``; ``entra`` maps its ``tid`` claim to ``globex`` and its scopes to tools.
Tokens are obtained over HTTP with the client-credentials grant and presented to a real
Tenantry server; forged tokens are signed with keys the tests hold.
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
from joserfc import jwt
from joserfc.jwk import import_key

from tests.support.idp import RunningIdp, generate_private_jwk, start_idp
from tests.support.mcp_clients import mcp_client
from tests.support.rpc import LegacySession, modern_call
from tests.support.server import RunningServer, start_server
from tests.support.timing import first_change

pytestmark = pytest.mark.idp

AUDIENCE = "https://tenantry.test/mcp"
OTHER_AUDIENCE = "https://elsewhere.test/mcp"
ENTRA_TID = "8d2f6a4e-3b1c-4c55-9a7e-1f0e2d3c4b5a"
WHOAMI = {"name": "whoami", "arguments": {}}

OKTA_CLIENTS = [
    {
        "client_id": "acme-agent",
        "client_secret": "acme-secret-0001",
        "scopes": ["mcp"],
        "extra_claims": {"org_id": "acme", "allowed_tools": ["whoami", "query_crm"]},
    },
    {
        "client_id": "globex-impostor",
        "client_secret": "impostor-secret-0001",
        "extra_claims": {"org_id": "globex", "allowed_tools": ["whoami"]},
    },
    {"client_id": "no-tenant-agent", "client_secret": "no-tenant-secret-0001"},
]
ENTRA_CLIENTS = [
    {
        "client_id": "globex-agent",
        "client_secret": "globex-secret-0001",
        "scopes": ["crm.read", "files.read", "profile"],
        "extra_claims": {"tid": ENTRA_TID},
    }
]


@dataclass
class Deployment:
    server: RunningServer
    okta: RunningIdp
    entra: RunningIdp

    def okta_token(self, client: int = 0, **kwargs: str) -> str:
        spec = OKTA_CLIENTS[client]
        return self.okta.token(spec["client_id"], spec["client_secret"], **kwargs)

    def entra_token(self, scope: str | None = None) -> str:
        spec = ENTRA_CLIENTS[0]
        return self.entra.token(spec["client_id"], spec["client_secret"], scope=scope)


def provider_config(okta: RunningIdp, entra: RunningIdp) -> str:
    return f"""
[[identity_providers]]
name = "okta"
issuer = "{okta.issuer}"
audience = ["{AUDIENCE}"]
algorithms = ["ES256", "RS256"]
tenant_claim = "org_id"
tenants = ["acme"]
tools_claim = "allowed_tools"
jwks_min_refresh_interval = 3

[[identity_providers]]
name = "entra"
issuer = "{entra.issuer}"
jwks_url = "{entra.jwks_uri}"
audience = ["{AUDIENCE}"]
algorithms = ["RS256"]
tenant_claim = "tid"
tenant_map = {{ "{ENTRA_TID}" = "globex" }}
scope_tools = {{ "crm.read" = ["query_crm"], "files.read" = ["list_files", "read_file"] }}
"""


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    tmp = tmp_path_factory.mktemp("idps")
    okta = start_idp(
        tmp / "okta", clients=OKTA_CLIENTS, resource=AUDIENCE, alg="ES256", extra_resources=[OTHER_AUDIENCE]
    )
    entra = start_idp(tmp / "entra", clients=ENTRA_CLIENTS, resource=AUDIENCE, alg="RS256")
    config = tmp / "tenantry.toml"
    config.write_text(provider_config(okta, entra))
    server = start_server(tmp / "data", config=config)
    try:
        yield Deployment(server, okta, entra)
    finally:
        server.stop()
        okta.stop()
        entra.stop()


def claims_of(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def forge(private_jwk: dict, claims: dict, *, kid: str | None = None) -> str:
    key = import_key(private_jwk)
    header = {"alg": private_jwk["alg"], "kid": kid or private_jwk["kid"], "typ": "at+jwt"}
    return jwt.encode(header, claims, key, algorithms=[private_jwk["alg"]])


def okta_claims(deployment: Deployment, **overrides: object) -> dict:
    now = int(time.time())
    base = {
        "iss": deployment.okta.issuer,
        "aud": AUDIENCE,
        "sub": "forged-agent",
        "org_id": "acme",
        "allowed_tools": ["whoami"],
        "iat": now,
        "exp": now + 300,
        "jti": os.urandom(8).hex(),
    }
    base.update(overrides)
    return base


def assert_refused(response: httpx2.Response, reason: str) -> None:
    assert response.status_code == 401, response.text
    assert response.json()["error"]["data"]["code"] == "invalid_credential"
    assert reason in response.json()["error"]["message"], response.json()["error"]["message"]


# -- accepted ----------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("era", ["legacy", "auto"])
async def test_a_providers_token_is_accepted_for_its_tenant_and_tools(deployment: Deployment, era: str) -> None:
    token = deployment.okta_token()
    async with mcp_client(deployment.server.mcp_url, token, era) as client:  # type: ignore[arg-type]
        assert sorted(t.name for t in (await client.list_tools()).tools) == ["query_crm", "whoami"]
        who = (await client.call_tool("whoami", {})).structured_content
    assert (who["tenant_id"], who["subject"]) == ("acme", "acme-agent")


def test_scopes_map_to_tools_and_a_claim_value_maps_to_the_tenant(deployment: Deployment) -> None:
    token = deployment.entra_token(scope="crm.read files.read")
    listed = modern_call(deployment.server.mcp_url, token, "tools/list")
    assert listed.status_code == 200, listed.text
    assert sorted(t["name"] for t in listed.json()["result"]["tools"]) == ["list_files", "query_crm", "read_file"]
    narrow = deployment.entra_token(scope="crm.read")
    listed = modern_call(deployment.server.mcp_url, narrow, "tools/list").json()["result"]["tools"]
    assert [t["name"] for t in listed] == ["query_crm"]
    crm = modern_call(deployment.server.mcp_url, narrow, "tools/call", {"name": "query_crm", "arguments": {}})
    assert "globex-canary" in crm.text and "acme-canary" not in crm.text


def test_the_session_belongs_to_the_providers_principal(deployment: Deployment) -> None:
    """``acme-agent`` from the provider is not ``acme-agent`` from the built-in issuer."""
    session = LegacySession(deployment.server.mcp_url, deployment.okta_token())
    assert session.call("tools/call", WHOAMI).status_code == 200
    namesake = deployment.server.token("acme", "acme-agent")
    hijack = session.call("tools/call", WHOAMI, token=namesake)
    assert hijack.status_code == 404 and hijack.json()["error"]["data"]["code"] == "session_not_found"


def test_a_providers_token_can_be_revoked_by_jti(deployment: Deployment) -> None:
    token = deployment.okta_token()
    assert modern_call(deployment.server.mcp_url, token, "tools/call", WHOAMI).status_code == 200
    deployment.server.cli("token", "revoke", "--jti", claims_of(token)["jti"], "--tenant", "acme")
    response, _ = first_change(
        lambda: modern_call(deployment.server.mcp_url, token, "tools/call", WHOAMI),
        lambda r: r.status_code != 200,
        within=2,
    )
    assert_refused(response, "revoked")


# -- refused -----------------------------------------------------------------------------------


def test_a_token_for_another_audience_is_refused(deployment: Deployment) -> None:
    token = deployment.okta_token(resource=OTHER_AUDIENCE)
    assert claims_of(token)["aud"] == OTHER_AUDIENCE
    assert_refused(modern_call(deployment.server.mcp_url, token, "tools/call", WHOAMI), "audience")


def test_a_token_without_the_tenant_claim_is_refused(deployment: Deployment) -> None:
    token = deployment.okta_token(client=2)
    assert "org_id" not in claims_of(token)
    assert_refused(modern_call(deployment.server.mcp_url, token, "tools/call", WHOAMI), "lacks the tenant claim")


def test_a_provider_cannot_speak_for_a_tenant_it_is_not_configured_for(deployment: Deployment) -> None:
    token = deployment.okta_token(client=1)
    assert claims_of(token)["org_id"] == "globex"
    response = modern_call(deployment.server.mcp_url, token, "tools/call", WHOAMI)
    assert_refused(response, "may not speak for")
    assert "globex" not in response.text


def test_a_token_signed_with_another_providers_key_is_refused(deployment: Deployment) -> None:
    entra_key = deployment.entra.private_jwks["keys"][0]
    forged = forge(entra_key, okta_claims(deployment))
    assert_refused(modern_call(deployment.server.mcp_url, forged, "tools/call", WHOAMI), "does not publish")


def test_a_token_signed_with_an_unknown_key_is_refused(deployment: Deployment) -> None:
    stranger = generate_private_jwk("ES256", "stranger")
    forged = forge(stranger, okta_claims(deployment))
    assert_refused(modern_call(deployment.server.mcp_url, forged, "tools/call", WHOAMI), "does not publish")
    # Reusing the provider's own key id does not help: the signature does not match its key.
    okta_kid = deployment.okta.private_jwks["keys"][0]["kid"]
    impostor = forge(stranger, okta_claims(deployment), kid=okta_kid)
    assert_refused(modern_call(deployment.server.mcp_url, impostor, "tools/call", WHOAMI), "signature")


def test_a_flood_of_unknown_key_ids_does_not_hammer_the_provider(deployment: Deployment) -> None:
    stranger = generate_private_jwk("ES256", "flood")
    time.sleep(3.1)  # let the refresh interval of earlier tests pass
    before = deployment.okta.jwks_hits()
    started = time.monotonic()
    for _ in range(40):
        forged = forge(stranger, okta_claims(deployment), kid=os.urandom(8).hex())
        assert modern_call(deployment.server.mcp_url, forged, "tools/call", WHOAMI).status_code == 401
    elapsed = time.monotonic() - started
    fetched = deployment.okta.jwks_hits() - before
    assert fetched <= 1 + int(elapsed // 3), (fetched, elapsed)
    # A real token still verifies from the cached keys.
    assert modern_call(deployment.server.mcp_url, deployment.okta_token(), "tools/call", WHOAMI).status_code == 200


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ({"alg": "none"}, "algorithm not allowed"),
        ({"alg": "HS256"}, "algorithm not allowed"),
        ({"alg": "ES256", "jku": "http://127.0.0.1:1/keys"}, "carry or point to keys"),
        ({"alg": "ES256", "jwk": {"kty": "EC"}}, "carry or point to keys"),
    ],
)
def test_header_tricks_are_refused_for_provider_tokens(deployment: Deployment, header: dict, reason: str) -> None:
    def b64(value: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    token = f"{b64(header)}.{b64(okta_claims(deployment))}.{b64('sig')}"
    assert_refused(modern_call(deployment.server.mcp_url, token, "tools/call", WHOAMI), reason)


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"exp": int(time.time()) - 600, "iat": int(time.time()) - 900}, "expired"),
        ({"iat": int(time.time()), "exp": int(time.time()) + 7200}, "lifetime"),
        ({"iss": "http://127.0.0.1:1"}, "issuer"),
        ({"org_id": 42}, "must be a string"),
    ],
)
def test_claims_are_checked_on_correctly_signed_tokens(deployment: Deployment, overrides: dict, reason: str) -> None:
    okta_key = deployment.okta.private_jwks["keys"][0]
    forged = forge(okta_key, okta_claims(deployment, **overrides))
    assert_refused(modern_call(deployment.server.mcp_url, forged, "tools/call", WHOAMI), reason)
    # Positive control: the same key and claims without the override are accepted.
    good = forge(okta_key, okta_claims(deployment))
    assert modern_call(deployment.server.mcp_url, good, "tools/call", WHOAMI).status_code == 200


def test_an_issuer_that_is_not_configured_is_refused(tmp_path: Path, deployment: Deployment) -> None:
    other = start_idp(tmp_path, clients=OKTA_CLIENTS[:1], resource=AUDIENCE)
    try:
        token = other.token(OKTA_CLIENTS[0]["client_id"], OKTA_CLIENTS[0]["client_secret"])
        assert_refused(modern_call(deployment.server.mcp_url, token, "tools/call", WHOAMI), "issuer not accepted")
    finally:
        other.stop()


def test_a_provider_key_rotation_is_picked_up_on_the_first_unknown_key_id(tmp_path: Path) -> None:
    old_key = generate_private_jwk("ES256", "rotation-old")
    provider = start_idp(tmp_path / "idp", clients=OKTA_CLIENTS[:1], resource=AUDIENCE, jwks={"keys": [old_key]})
    config = tmp_path / "tenantry.toml"
    config.write_text(
        f'[[identity_providers]]\nname = "rotating"\nissuer = "{provider.issuer}"\naudience = ["{AUDIENCE}"]\n'
        'tenant_claim = "org_id"\ntenants = ["acme"]\ntools_claim = "allowed_tools"\njwks_min_refresh_interval = 0.5\n'
    )
    server = start_server(tmp_path / "data", config=config)
    try:
        client = OKTA_CLIENTS[0]
        old_token = provider.token(client["client_id"], client["client_secret"])
        assert modern_call(server.mcp_url, old_token, "tools/call", WHOAMI).status_code == 200
        provider.stop()
        new_key = generate_private_jwk("ES256", "rotation-new")
        provider = start_idp(
            tmp_path / "idp",
            clients=OKTA_CLIENTS[:1],
            resource=AUDIENCE,
            port=provider.port,
            jwks={"keys": [new_key, old_key]},
        )
        new_token = provider.token(client["client_id"], client["client_secret"])
        assert json.loads(base64.urlsafe_b64decode(new_token.split(".")[0] + "=="))["kid"] == "rotation-new"
        time.sleep(0.6)
        assert modern_call(server.mcp_url, new_token, "tools/call", WHOAMI).status_code == 200
        assert modern_call(server.mcp_url, old_token, "tools/call", WHOAMI).status_code == 200
    finally:
        server.stop()
        provider.stop()


def test_a_provider_that_is_down_refuses_its_tokens_but_not_the_server(tmp_path: Path) -> None:
    config = tmp_path / "tenantry.toml"
    config.write_text(
        '[[identity_providers]]\nname = "down"\nissuer = "http://127.0.0.1:9"\n'
        'tenant_claim = "org_id"\ntenants = ["acme"]\ntools_claim = "allowed_tools"\nhttp_timeout = 1\n'
    )
    server = start_server(tmp_path / "data", config=config)
    try:
        key = generate_private_jwk("ES256", "down")
        now = int(time.time())
        claims = {
            "iss": "http://127.0.0.1:9",
            "aud": server.mcp_url,
            "sub": "a",
            "org_id": "acme",
            "iat": now,
            "exp": now + 60,
        }
        assert_refused(modern_call(server.mcp_url, forge(key, claims), "tools/call", WHOAMI), "unavailable")
        assert modern_call(server.mcp_url, server.token("acme", "alice"), "tools/call", WHOAMI).status_code == 200
    finally:
        server.stop()
