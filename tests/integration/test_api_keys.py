"""API keys over real HTTP: used directly as bearer credentials, exchanged at /oauth/token
(RFC 6749 client credentials), narrowed but never widened, revoked, rate-limited on failure."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx2
import pytest

from tests.support import web
from tests.support.mcp_clients import mcp_client
from tests.support.rpc import LegacySession, modern_call
from tests.support.server import RunningServer, start_server
from tests.support.timing import first_change

WHOAMI = {"name": "whoami", "arguments": {}}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    data = tmp_path_factory.mktemp("apikeys") / "data"
    config = data.parent / "tenantry.toml"
    config.write_text('[auth]\nfailed_attempts = "1000/minute"\n')
    running = start_server(data, config=config)
    yield running
    running.stop()


def new_key(server: RunningServer, tenant: str = "acme", tools: str | None = "whoami,query_crm") -> str:
    args = ["apikey", "create", "--tenant", tenant]
    if tools is not None:
        args += ["--tools", tools]
    return server.cli(*args).stdout.strip()


def key_id(key: str) -> str:
    return key.split("_")[2]


def exchange(
    server: RunningServer, key: str, *, scope: str | None = None, basic: bool = True, **extra: str
) -> httpx2.Response:
    form = {"grant_type": "client_credentials", **extra}
    if scope is not None:
        form["scope"] = scope
    if basic:
        return web.post(server.base_url + "/oauth/token", data=form, auth=(key_id(key), key))
    return web.post(server.base_url + "/oauth/token", data={**form, "client_id": key_id(key), "client_secret": key})


def claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def test_the_key_is_printed_once_and_only_a_hash_is_stored(server: RunningServer) -> None:
    key = new_key(server)
    assert key.startswith("tnty_acme_")
    secret = key.rsplit("_", 1)[1].encode()
    for path in server.data_dir.rglob("*"):
        if path.is_file():
            assert secret not in path.read_bytes(), path
    listed = json.loads(server.cli("apikey", "list", "--tenant", "acme", "--json").stdout)
    assert any(k["key_id"] == key_id(key) and k["state"] == "active" for k in listed)
    assert key not in json.dumps(listed)


@pytest.mark.anyio
@pytest.mark.parametrize("era", ["legacy", "auto"])
async def test_a_key_works_as_a_bearer_credential_for_its_tenant_and_tools(server: RunningServer, era: str) -> None:
    key = new_key(server, tools="whoami,query_crm")
    async with mcp_client(server.mcp_url, key, era) as client:  # type: ignore[arg-type]
        assert sorted(t.name for t in (await client.list_tools()).tools) == ["query_crm", "whoami"]
        who = (await client.call_tool("whoami", {})).structured_content
        assert who["tenant_id"] == "acme" and who["subject"] == f"api-key:{key_id(key)}"


@pytest.mark.parametrize("basic", [True, False], ids=["basic", "form-body"])
def test_exchange_gives_a_short_lived_token_with_the_keys_tools(server: RunningServer, basic: bool) -> None:
    key = new_key(server, tools="whoami,query_crm")
    response = exchange(server, key, basic=basic)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 900
    assert body["scope"] == "query_crm whoami"
    token_claims = claims(body["access_token"])
    assert token_claims["tenant_id"] == "acme" and token_claims["allowed_tools"] == ["query_crm", "whoami"]
    assert token_claims["sub"] == f"api-key:{key_id(key)}"
    result = modern_call(server.mcp_url, body["access_token"], "tools/call", WHOAMI)
    assert result.status_code == 200 and "api-key:" in result.text


def test_a_scope_asking_for_more_gets_at_most_the_keys_tools(server: RunningServer) -> None:
    key = new_key(server, tools="whoami")
    response = exchange(server, key, scope="whoami query_crm read_file globex_forecast")
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "whoami"
    token = response.json()["access_token"]
    assert claims(token)["allowed_tools"] == ["whoami"]
    denied = modern_call(server.mcp_url, token, "tools/call", {"name": "query_crm", "arguments": {}})
    assert denied.json()["error"]["data"]["code"] == "tool_unavailable"


def test_a_scope_narrows(server: RunningServer) -> None:
    key = new_key(server, tools="whoami,query_crm")
    assert exchange(server, key, scope="query_crm").json()["scope"] == "query_crm"


def test_a_scope_with_none_of_the_keys_tools_is_invalid_scope(server: RunningServer) -> None:
    key = new_key(server, tools="whoami")
    response = exchange(server, key, scope="read_file")
    assert (response.status_code, response.json()["error"]) == (400, "invalid_scope")


def test_a_key_cannot_be_created_with_tools_the_tenant_lacks(server: RunningServer) -> None:
    result = server.cli("apikey", "create", "--tenant", "globex", "--tools", "write_file", check=False)
    assert result.returncode == 2 and "not granted" in result.stderr


@pytest.mark.parametrize(
    ("mangle", "status", "error"),
    [
        (lambda k: {"auth": (key_id(k), k[:-3] + "xyz")}, 401, "invalid_client"),
        (lambda k: {"auth": ("0" * 16, k)}, 401, "invalid_client"),
        (lambda k: {"auth": (key_id(k), "not-a-key")}, 401, "invalid_client"),
        (lambda k: {"data_only": {"grant_type": "client_credentials"}}, 401, "invalid_client"),
        (lambda k: {"auth": (key_id(k), k), "form": {"grant_type": "password"}}, 400, "unsupported_grant_type"),
        (lambda k: {"auth": (key_id(k), k), "form": {}}, 400, "invalid_request"),
        (
            lambda k: {"auth": (key_id(k), k), "form": {"grant_type": "client_credentials", "client_secret": k}},
            400,
            "invalid_request",
        ),
        (
            lambda k: {"auth": (key_id(k), k), "raw": "grant_type=client_credentials&grant_type=password"},
            400,
            "invalid_request",
        ),
        (lambda k: {"auth": (key_id(k), k), "json": {"grant_type": "client_credentials"}}, 400, "invalid_request"),
    ],
    ids=[
        "wrong-secret",
        "wrong-client-id",
        "not-a-key",
        "no-client-authentication",
        "wrong-grant",
        "no-grant",
        "two-authentication-methods",
        "repeated-parameter",
        "json-body",
    ],
)
def test_bad_token_requests_get_rfc6749_errors(server: RunningServer, mangle, status: int, error: str) -> None:
    key = new_key(server)
    spec = mangle(key)
    url = server.base_url + "/oauth/token"
    if "raw" in spec:
        response = web.post(
            url, content=spec["raw"], auth=spec["auth"], headers={"Content-Type": "application/x-www-form-urlencoded"}
        )
    elif "json" in spec:
        response = web.post(url, json=spec["json"], auth=spec["auth"])
    elif "data_only" in spec:
        response = web.post(url, data=spec["data_only"])
    else:
        response = web.post(url, data=spec.get("form", {"grant_type": "client_credentials"}), auth=spec["auth"])
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == error and body["error_description"]
    assert response.headers["cache-control"] == "no-store"
    if status == 401:
        assert response.headers["www-authenticate"].startswith("Basic")
    assert "access_token" not in body and key not in response.text


def test_basic_credentials_are_form_decoded(server: RunningServer) -> None:
    key = new_key(server)
    raw = base64.b64encode(f"{quote(key_id(key))}:{quote(key)}".encode()).decode()
    response = web.post(
        server.base_url + "/oauth/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": f"Basic {raw}"},
    )
    assert response.status_code == 200, response.text


def test_revoking_a_key_stops_it_and_every_token_exchanged_for_it(server: RunningServer) -> None:
    key = new_key(server)
    token = exchange(server, key).json()["access_token"]
    session = LegacySession(server.mcp_url, key)
    assert session.call("tools/call", WHOAMI).status_code == 200
    server.cli("apikey", "revoke", key_id(key), "--reason", "leaked in a log")
    response, elapsed = first_change(
        lambda: session.call("tools/call", WHOAMI), lambda r: r.status_code != 200, within=2
    )
    assert response.status_code == 401 and "revoked" in response.json()["error"]["message"]
    assert elapsed < 1.0
    assert modern_call(server.mcp_url, token, "tools/call", WHOAMI).status_code == 401
    assert exchange(server, key).status_code == 401
    listed = json.loads(server.cli("apikey", "list", "--tenant", "acme", "--json").stdout)
    assert [k["state"] for k in listed if k["key_id"] == key_id(key)] == ["revoked"]
    events = {
        r["event_type"] for r in server.audit_records("acme") if (r.get("detail") or {}).get("key_id") == key_id(key)
    }
    assert {"api_key_created", "api_key_revoked", "token_issued"} <= events


def test_a_halted_tenant_cannot_exchange_its_keys(server: RunningServer) -> None:
    server.cli("tenant", "create", "keys-halted", "--tools", "whoami")
    key = new_key(server, tenant="keys-halted", tools="whoami")
    assert exchange(server, key).status_code == 200
    server.cli("tenant", "halt", "keys-halted", "--reason", "billing")
    response, _ = first_change(lambda: exchange(server, key), lambda r: r.status_code != 200, within=2)
    assert (response.status_code, response.json()["error"]) == (403, "access_denied")
    assert "halted" in response.json()["error_description"]


def test_garbage_keys_from_a_shared_address_never_lock_out_valid_keys(tmp_path: Path) -> None:
    config = tmp_path / "tenantry.toml"
    config.write_text('[auth]\nfailed_attempts = "3/minute"\n')
    limited = start_server(tmp_path / "data", config=config)
    try:
        acme_key = new_key(limited)
        globex_key = new_key(limited, tenant="globex", tools="whoami")
        wrong_secret = acme_key[:-3] + "zzz"  # a real key id with a wrong secret
        unknown = "tnty_acme_" + "0" * 16 + "_" + "z" * 43  # no such key id
        statuses = [exchange(limited, wrong_secret).status_code for _ in range(3)]
        assert statuses == [401, 401, 401]
        # 20 garbage keys from 127.0.0.1, over the limit: 429 with Retry-After, whether the key
        # id exists or not (nothing to learn about which keys exist)...
        for attempt in range(20):
            garbage = wrong_secret if attempt % 2 else unknown
            response = exchange(limited, garbage)
            assert response.status_code == 429 and int(response.headers["retry-after"]) >= 1, response.text
            as_bearer = modern_call(limited.mcp_url, garbage, "tools/call", WHOAMI)
            assert as_bearer.status_code == 429 and as_bearer.json()["error"]["data"]["code"] == "rate_limited"
            assert int(as_bearer.headers["retry-after"]) >= 1
        # ...while valid keys of every tenant from the same address keep working, at once.
        for key, tenant in ((globex_key, "globex"), (acme_key, "acme")):
            assert exchange(limited, key).status_code == 200
            answer = modern_call(limited.mcp_url, key, "tools/call", WHOAMI)
            assert answer.status_code == 200, answer.text
            assert answer.json()["result"]["structuredContent"]["tenant_id"] == tenant
        token = limited.token("acme", "alice")
        assert modern_call(limited.mcp_url, token, "tools/call", WHOAMI).status_code == 200
        # Failures within the limit are audited one by one, those over it are not (bounded).
        refusals = [r for r in limited.audit_records("_system") if r["event_type"] == "token_refused"]
        assert len(refusals) == 3 and all(acme_key not in json.dumps(r) for r in refusals)
    finally:
        limited.stop()
