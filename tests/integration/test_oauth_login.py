"""A real MCP client logs in through the enterprise's identity provider, end to end.

The ``mcp`` SDK's ``OAuthClientProvider`` meets a real Tenantry server and a real OpenID
provider (npm ``oidc-provider``) on 127.0.0.1: a 401 leads it to the protected resource
metadata, from there to the provider, dynamic client registration, the authorization code
flow with PKCE and the RFC 8707 ``resource`` indicator; the test plays the user (login and
consent over HTTP, no browser). The session belongs to the tenant the provider's ``org_id``
claim names. Step-up: a token without the scope of a tool of its own tenant gets 403
``insufficient_scope`` naming the scope; a tool of no one, of another tenant only, or not
granted to the tenant gets the one ``tool_unavailable`` answer.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx2
import pytest
from mcp import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata, OAuthToken
from mcp.shared.exceptions import MCPError

from tests.support import web
from tests.support.idp import RunningIdp, scripted_login, start_idp
from tests.support.mcp_clients import ERAS, Era
from tests.support.rpc import HANDSHAKE_VERSION, modern_call, post, request
from tests.support.server import RunningServer, free_port, start_server

pytestmark = pytest.mark.idp

OTHER_RESOURCE = "https://elsewhere.test/mcp"
INITIALIZE = {"protocolVersion": HANDSHAKE_VERSION, "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}
SCOPES = {
    "mcp.whoami": ["whoami"],
    "crm.read": ["query_crm"],
    "files.read": ["list_files", "read_file"],
    "mail.send": ["send_email"],
    "forecast.read": ["globex_forecast"],
}
ACCOUNTS = {
    "alice": {"org_id": "acme"},
    "bob": {"org_id": "globex"},
    "mallory": {"org_id": "initech"},
    "nobody": {},
}
CLIENTS = [  # machine clients (client credentials) with fixed scopes, for the raw HTTP tests
    {"client_id": "acme-narrow", "client_secret": "acme-narrow-secret", "scopes": ["mcp.whoami"],
     "extra_claims": {"org_id": "acme"}},
    {"client_id": "globex-narrow", "client_secret": "globex-narrow-secret", "scopes": ["mcp.whoami", "forecast.read"],
     "extra_claims": {"org_id": "globex"}},
]  # fmt: skip


@dataclass
class Deployment:
    server: RunningServer
    idp: RunningIdp

    def machine_token(self, client: int, **kwargs: str) -> str:
        spec = CLIENTS[client]
        scope = " ".join(spec["scopes"])
        return self.idp.token(spec["client_id"], spec["client_secret"], scope=scope, **kwargs)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    tmp = tmp_path_factory.mktemp("oauth")
    server_port = free_port()
    resource = f"http://127.0.0.1:{server_port}/mcp"
    idp = start_idp(
        tmp / "idp",
        clients=CLIENTS,
        resource=resource,
        extra_resources=[OTHER_RESOURCE],
        interactive={"accounts": ACCOUNTS, "resource_scopes": sorted(SCOPES)},
    )
    scope_tools = ", ".join(f'"{scope}" = {json.dumps(tools)}' for scope, tools in SCOPES.items())
    config = tmp / "tenantry.toml"
    config.write_text(
        f"""
[[identity_providers]]
name = "corp"
issuer = "{idp.issuer}"
tenant_claim = "org_id"
tenants = ["acme", "globex"]
scope_tools = {{ {scope_tools} }}
"""
    )
    server = start_server(tmp / "data", config=config, port=server_port)
    try:
        yield Deployment(server, idp)
    finally:
        server.stop()
        idp.stop()


class MemoryStorage:
    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info


@dataclass
class User:
    """The person at the browser: logs in as ``account``; ``first_scope`` narrows the first request."""

    account: str
    first_scope: str | None = None
    authorization_urls: list[str] = field(default_factory=list)
    pending: str | None = None

    async def redirect(self, url: str) -> None:
        if self.first_scope is not None and not self.authorization_urls:
            parts = urlsplit(url)
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            query["scope"] = self.first_scope
            url = parts._replace(query=urlencode(query)).geturl()
        self.authorization_urls.append(url)
        self.pending = url

    async def callback(self) -> AuthorizationCodeResult:
        assert self.pending is not None
        answer = await scripted_login(self.pending, self.account)
        assert answer.code is not None, f"the provider refused: {answer.error}"
        return AuthorizationCodeResult(code=answer.code, state=answer.state, iss=answer.iss)


def oauth_provider(deployment: Deployment, user: User, storage: MemoryStorage) -> OAuthClientProvider:
    return OAuthClientProvider(
        server_url=deployment.server.mcp_url,
        client_metadata=OAuthClientMetadata(
            client_name="tenantry-tests",
            redirect_uris=["http://127.0.0.1:9/callback"],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="none",
        ),
        storage=storage,
        redirect_handler=user.redirect,
        callback_handler=user.callback,
    )


def sent_resources(user: User) -> list[str]:
    return [parse_qs(urlsplit(url).query)["resource"][0] for url in user.authorization_urls]


# -- discovery ---------------------------------------------------------------------------------


def test_protected_resource_metadata_leads_to_the_identity_provider(deployment: Deployment) -> None:
    for path in ("/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource/mcp"):
        metadata = web.get(deployment.server.base_url + path, timeout=5).json()
        assert metadata["resource"] == deployment.server.mcp_url
        # The provider first (clients log in at the first one), then the built-in issuer.
        assert metadata["authorization_servers"] == [deployment.idp.issuer, deployment.server.base_url]
        assert metadata["scopes_supported"] == sorted(SCOPES)


def test_a_401_challenge_names_the_scopes_and_the_resource_metadata(deployment: Deployment) -> None:
    response = modern_call(deployment.server.mcp_url, None, "tools/list")
    assert response.status_code == 401
    challenge = response.headers["www-authenticate"]
    assert f'scope="{" ".join(sorted(SCOPES))}"' in challenge
    assert f'resource_metadata="{deployment.server.base_url}/.well-known/oauth-protected-resource/mcp"' in challenge


# -- login -------------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("era", ERAS)
async def test_the_sdk_oauth_client_logs_in_and_the_session_is_the_claimed_tenants(
    deployment: Deployment, era: Era
) -> None:
    user, storage = User("alice"), MemoryStorage()
    auth = oauth_provider(deployment, user, storage)
    async with (
        web.AsyncClient(auth=auth, timeout=30) as http,
        Client(streamable_http_client(deployment.server.mcp_url, http_client=http), mode=era, cache=None) as client,
    ):
        who = (await client.call_tool("whoami", {})).structured_content
        tools = sorted(t.name for t in (await client.list_tools()).tools)
    assert (who["tenant_id"], who["subject"]) == ("acme", "alice")
    assert tools == ["list_files", "query_crm", "read_file", "send_email", "whoami"]
    # Dynamic registration happened, PKCE and the resource indicator were sent.
    assert storage.client is not None and storage.client.client_id
    assert len(user.authorization_urls) == 1
    query = parse_qs(urlsplit(user.authorization_urls[0]).query)
    assert query["code_challenge_method"] == ["S256"] and query["code_challenge"]
    assert sent_resources(user) == [deployment.server.mcp_url]
    assert storage.tokens is not None
    claims = _claims(storage.tokens.access_token)
    assert claims["aud"] == deployment.server.mcp_url and claims["org_id"] == "acme"


@pytest.mark.anyio
async def test_a_missing_scope_is_stepped_up_by_the_sdk_client(deployment: Deployment) -> None:
    """The first login grants only ``mcp.whoami``; a call to ``query_crm`` gets 403 insufficient_scope
    and the client logs in again for the union of scopes, then the call succeeds."""
    user, storage = User("alice", first_scope="mcp.whoami"), MemoryStorage()
    statuses: list[tuple[int, str]] = []

    async def record(response: httpx2.Response) -> None:
        if response.request.url.path == "/mcp":
            statuses.append((response.status_code, response.headers.get("www-authenticate", "")))

    auth = oauth_provider(deployment, user, storage)
    async with (
        web.AsyncClient(auth=auth, timeout=30, event_hooks={"response": [record]}) as http,
        Client(streamable_http_client(deployment.server.mcp_url, http_client=http), cache=None) as client,
    ):
        assert [t.name for t in (await client.list_tools()).tools] == ["whoami"]
        result = await client.call_tool("query_crm", {})
    assert not result.is_error and "acme-canary" in json.dumps(result.structured_content)
    assert len(user.authorization_urls) == 2
    assert (403, 'Bearer error="insufficient_scope", scope="crm.read"') in [
        (status, challenge.split(", resource_metadata")[0]) for status, challenge in statuses
    ]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("account", "reason"),
    [("mallory", "may not speak for"), ("nobody", "lacks the tenant claim")],
)
async def test_a_login_for_a_tenant_the_provider_may_not_name_gets_no_session(
    deployment: Deployment, account: str, reason: str
) -> None:
    user, storage = User(account), MemoryStorage()
    last: list[httpx2.Response] = []

    async def record(response: httpx2.Response) -> None:
        if response.request.url.path == "/mcp":
            await response.aread()
            last.append(response)

    auth = oauth_provider(deployment, user, storage)
    with pytest.raises(ExceptionGroup) as raised:
        async with (
            web.AsyncClient(auth=auth, timeout=30, event_hooks={"response": [record]}) as http,
            Client(streamable_http_client(deployment.server.mcp_url, http_client=http), cache=None) as client,
        ):
            await client.call_tool("whoami", {})
    leaves = _leaves(raised.value)
    assert [type(e) for e in leaves] == [MCPError], leaves
    assert isinstance(leaves[0], MCPError) and leaves[0].error.data["code"] == "invalid_credential"
    assert reason in leaves[0].error.message
    assert storage.tokens is not None, "the provider issued a token: Tenantry is what refuses it"
    assert last and all(r.status_code == 401 for r in last)
    assert reason in last[-1].json()["error"]["message"]


@pytest.mark.parametrize("era", ["modern", "legacy"])
def test_a_token_minted_for_another_resource_is_refused(deployment: Deployment, era: str) -> None:
    mine = deployment.machine_token(0)
    other = deployment.machine_token(0, resource=OTHER_RESOURCE)
    assert _claims(other)["aud"] == OTHER_RESOURCE
    for token, expected in ((mine, 200), (other, 401)):
        response = _call(deployment, token, "whoami", era)
        assert response.status_code == expected, response.text
    assert "audience" in _call(deployment, other, "whoami", era).json()["error"]["message"]


# -- step-up and the no-oracle rule ------------------------------------------------------------


def test_a_granted_tool_the_token_does_not_cover_gets_the_step_up_answer(deployment: Deployment) -> None:
    token = deployment.machine_token(0)  # acme, scope mcp.whoami only
    assert _call(deployment, token, "whoami").status_code == 200  # positive control
    refused = _call(deployment, token, "query_crm")
    assert refused.status_code == 403, refused.text
    assert refused.headers["www-authenticate"] == (
        'Bearer error="insufficient_scope", scope="crm.read", '
        f'resource_metadata="{deployment.server.base_url}/.well-known/oauth-protected-resource/mcp"'
    )
    assert refused.json()["error"]["data"]["code"] == "insufficient_scope"
    assert refused.json()["id"] == 1
    audit = deployment.server.cli("audit", "tail", "--tenant", "acme").stdout
    assert "not_in_token" in audit and "acme-canary" not in refused.text


@pytest.mark.parametrize(
    ("client", "tool"),
    [
        (0, "globex_forecast"),  # registered for another tenant only (a scope maps to it)
        (1, "send_email"),  # not granted to globex (a scope maps to it)
        (0, "no_such_tool"),  # exists nowhere
        (1, "no_such_tool"),
    ],
)
def test_tools_of_no_one_of_other_tenants_or_not_granted_get_one_answer(
    deployment: Deployment, client: int, tool: str
) -> None:
    token = deployment.machine_token(client)
    response, unknown = _call(deployment, token, tool), _call(deployment, token, "never_registered")
    assert "www-authenticate" not in response.headers
    assert response.status_code == unknown.status_code
    error = response.json()["error"]
    assert error["data"]["code"] == "tool_unavailable"
    assert error["message"] == f"Tool not available: {tool}"
    assert json.dumps(error).replace(tool, "X") == json.dumps(unknown.json()["error"]).replace("never_registered", "X")


def test_step_up_is_the_tokens_own_tenants_answer_not_another_tenants(deployment: Deployment) -> None:
    """``globex_forecast`` steps up nowhere for acme, and for globex it is simply callable."""
    globex = deployment.machine_token(1)
    assert _call(deployment, globex, "globex_forecast").status_code == 200
    assert _call(deployment, globex, "query_crm").status_code == 403  # globex's own tool, not covered


def _call(deployment: Deployment, token: str, tool: str, era: str = "modern") -> httpx2.Response:
    params = {"name": tool, "arguments": {"quarter": "Q1"} if tool == "globex_forecast" else {}}
    if era == "modern":
        return modern_call(deployment.server.mcp_url, token, "tools/call", params)
    # Handshake era: an initialize is the first request that must be authenticated.
    return post(deployment.server.mcp_url, request("initialize", INITIALIZE), token=token)


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]


def _claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def test_routing_headers_that_disagree_are_refused_before_any_step_up(deployment: Deployment) -> None:
    token = deployment.machine_token(0)
    params = {"name": "query_crm", "arguments": {}}
    assert modern_call(deployment.server.mcp_url, token, "tools/call", params).status_code == 403  # control
    mismatch = modern_call(deployment.server.mcp_url, token, "tools/call", params, {"Mcp-Name": "whoami"})
    assert mismatch.status_code == 400, mismatch.text
    assert "www-authenticate" not in mismatch.headers and "header" in mismatch.text.lower()
