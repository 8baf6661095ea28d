"""The OpenID provider test fixture itself: real oidc-provider, real JWT access tokens."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError
from joserfc.jwk import KeySet

from tests.support import web
from tests.support.idp import RunningIdp, generate_private_jwk, start_idp

pytestmark = pytest.mark.idp

RESOURCE = "http://127.0.0.1:8750/mcp"
OTHER_RESOURCE = "http://127.0.0.1:8751/mcp"
ACME = {
    "client_id": "acme-agent",
    "client_secret": "acme-secret-0123456789",
    "scopes": ["mcp:tools", "mcp:resources"],
    "extra_claims": {"org_id": "acme", "allowed_tools": ["whoami"]},
}
GLOBEX = {
    "client_id": "globex-agent",
    "client_secret": "globex secret/with:odd&chars+",
    "scopes": ["mcp:tools"],
    "extra_claims": {"org_id": "globex"},
}
PLAIN = {"client_id": "plain-agent", "client_secret": "plain-secret"}


@pytest.fixture(scope="module")
def idps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningIdp, RunningIdp]]:
    tmp = tmp_path_factory.mktemp("idp")
    first = start_idp(tmp, clients=[ACME, PLAIN], resource=RESOURCE, alg="ES256", extra_resources=[OTHER_RESOURCE])
    try:
        second = start_idp(tmp, clients=[GLOBEX], resource=RESOURCE, alg="RS256", access_token_ttl=120)
    except BaseException:
        first.stop()
        raise
    try:
        yield first, second
    finally:
        first.stop()
        second.stop()


def fetched_keys(idp: RunningIdp) -> KeySet:
    """The provider's public keys, found the way a resource server finds them: discovery, then jwks_uri."""
    metadata = web.get(idp.issuer + "/.well-known/openid-configuration", timeout=5).json()
    assert metadata["issuer"] == idp.issuer
    return KeySet.import_key_set(web.get(metadata["jwks_uri"], timeout=5).json())


def test_two_providers_issue_tokens_signed_with_their_own_keys(idps: tuple[RunningIdp, RunningIdp]) -> None:
    first, second = idps
    assert first.port != second.port
    assert first.private_jwks["keys"][0]["kid"] != second.private_jwks["keys"][0]["kid"]

    token = jwt.decode(first.token(ACME["client_id"], ACME["client_secret"]), fetched_keys(first))
    assert token.header == {"alg": "ES256", "typ": "at+jwt", "kid": first.private_jwks["keys"][0]["kid"]}
    claims = token.claims
    assert claims["iss"] == first.issuer
    assert claims["aud"] == RESOURCE
    assert claims["sub"] == claims["client_id"] == "acme-agent"
    assert claims["org_id"] == "acme"
    assert claims["allowed_tools"] == ["whoami"]
    assert claims["exp"] - claims["iat"] == 600
    assert isinstance(claims["jti"], str) and claims["jti"]
    assert "scope" not in claims  # oidc-provider grants no scope unless one is asked for

    token = jwt.decode(second.token(GLOBEX["client_id"], GLOBEX["client_secret"], basic=False), fetched_keys(second))
    assert token.header == {"alg": "RS256", "typ": "at+jwt", "kid": second.private_jwks["keys"][0]["kid"]}
    assert token.claims["iss"] == second.issuer
    assert token.claims["sub"] == "globex-agent"
    assert token.claims["org_id"] == "globex"
    assert token.claims["exp"] - token.claims["iat"] == 120

    # Each provider's token verifies only with that provider's keys.
    with pytest.raises(InvalidKeyIdError):
        jwt.decode(first.token(ACME["client_id"], ACME["client_secret"]), fetched_keys(second))


def test_published_jwks_is_the_public_half_of_the_configured_keys(idps: tuple[RunningIdp, RunningIdp]) -> None:
    for idp in idps:
        published = web.get(idp.jwks_uri, timeout=5).json()
        assert published == idp.public_jwks


def test_a_client_without_extra_claims_gets_only_standard_claims(idps: tuple[RunningIdp, RunningIdp]) -> None:
    first, _ = idps
    claims = jwt.decode(first.token(PLAIN["client_id"], PLAIN["client_secret"]), fetched_keys(first)).claims
    assert set(claims) == {"iss", "aud", "sub", "client_id", "exp", "iat", "jti"}


@pytest.mark.parametrize("basic", [True, False], ids=["client_secret_basic", "client_secret_post"])
def test_wrong_secret_is_invalid_client(idps: tuple[RunningIdp, RunningIdp], basic: bool) -> None:
    first, second = idps
    response = first.token_response(ACME["client_id"], "not-the-secret", basic=basic)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    # A client of the other provider is unknown here.
    response = first.token_response(GLOBEX["client_id"], GLOBEX["client_secret"], basic=basic)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    with pytest.raises(AssertionError, match="invalid_client"):
        second.token(GLOBEX["client_id"], "wrong", basic=basic)


def test_scope_narrowing(idps: tuple[RunningIdp, RunningIdp]) -> None:
    first, _ = idps
    keys = fetched_keys(first)
    both = first.token(ACME["client_id"], ACME["client_secret"], scope="mcp:tools mcp:resources")
    assert jwt.decode(both, keys).claims["scope"] == "mcp:tools mcp:resources"
    narrowed = first.token(ACME["client_id"], ACME["client_secret"], scope="mcp:resources")
    assert jwt.decode(narrowed, keys).claims["scope"] == "mcp:resources"
    # Scopes the client is not allowed are silently dropped, not granted.
    response = first.token_response(ACME["client_id"], ACME["client_secret"], scope="mcp:tools admin")
    assert response.status_code == 200
    assert response.json()["scope"] == "mcp:tools"
    assert jwt.decode(response.json()["access_token"], keys).claims["scope"] == "mcp:tools"


def test_resource_indicator(idps: tuple[RunningIdp, RunningIdp]) -> None:
    first, _ = idps
    keys = fetched_keys(first)
    explicit = first.token(ACME["client_id"], ACME["client_secret"], resource=RESOURCE)
    assert jwt.decode(explicit, keys).claims["aud"] == RESOURCE
    other = first.token(ACME["client_id"], ACME["client_secret"], resource=OTHER_RESOURCE)
    assert jwt.decode(other, keys).claims["aud"] == OTHER_RESOURCE
    response = first.token_response(ACME["client_id"], ACME["client_secret"], resource="http://127.0.0.1:9/elsewhere")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_target"


def test_jwks_hits_counts_jwks_fetches(idps: tuple[RunningIdp, RunningIdp]) -> None:
    first, second = idps
    before, other_before = first.jwks_hits(), second.jwks_hits()
    for _ in range(3):
        fetched_keys(first)
    first.token(ACME["client_id"], ACME["client_secret"])  # issuing does not touch the JWKS endpoint
    assert first.jwks_hits() == before + 3
    assert second.jwks_hits() == other_before


@pytest.mark.parametrize(
    ("alg", "kty", "crv"), [("ES256", "EC", "P-256"), ("RS256", "RSA", None), ("EdDSA", "OKP", "Ed25519")]
)
def test_generate_private_jwk(alg: str, kty: str, crv: str | None) -> None:
    jwk = generate_private_jwk(alg, "k1")
    assert jwk["kty"] == kty and jwk["alg"] == alg and jwk["kid"] == "k1" and jwk["use"] == "sig"
    assert jwk.get("crv") == crv
    assert "d" in jwk
    if kty == "RSA":
        assert KeySet.import_key_set({"keys": [jwk]}).keys[0].raw_value.key_size == 2048


def test_eddsa_provider_with_two_published_keys(tmp_path) -> None:
    signing, spare = generate_private_jwk("EdDSA", "current"), generate_private_jwk("ES256", "next")
    idp = start_idp(tmp_path, clients=[ACME], resource=RESOURCE, jwks={"keys": [signing, spare]})
    try:
        keys = fetched_keys(idp)
        assert {key.kid for key in keys.keys} == {"current", "next"}
        token = jwt.decode(idp.token(ACME["client_id"], ACME["client_secret"]), keys, algorithms=["EdDSA"])
        assert token.header["kid"] == "current"
        assert token.header["alg"] == "EdDSA"
        assert token.claims["aud"] == RESOURCE
    finally:
        idp.stop()
    assert idp.process.returncode == 0, idp.logs()
