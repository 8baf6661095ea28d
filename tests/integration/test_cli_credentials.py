"""CLI details around credentials: ``token issue --json``, warnings for halted tenants, what
``token revoke --jti`` accepts, JSON nulls and tables that never cut a value short."""

from __future__ import annotations

import base64
import json
import re
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.support import web
from tests.support.rpc import modern_call
from tests.support.server import RunningServer, run_cli
from tests.support.store import copy_store, init_store

WHOAMI = {"name": "whoami", "arguments": {}}


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = init_store(tmp_path_factory.mktemp("credentials-template") / "data")
    run_cli("tenant", "create", "initech", "--tools", "whoami,list_files", data_dir=path)
    return path


@pytest.fixture
def data_dir(template: Path, tmp_path: Path) -> Path:
    return copy_store(template, tmp_path / "data")


def claims_of(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def test_token_issue_json_carries_the_jti_and_claims(data_dir: Path) -> None:
    before = time.time()
    result = run_cli(
        "token", "issue", "--tenant", "initech", "--sub", "agent-7", "--tools", "whoami", "--prefix", "reports",
        "--ttl", "10m", "--json", data_dir=data_dir,
    )  # fmt: skip
    assert result.stderr == ""
    issued = json.loads(result.stdout)
    assert set(issued) == {"token", "jti", "tenant_id", "sub", "expires_at", "tools", "prefix"}
    claims = claims_of(issued["token"])
    assert issued["jti"] == claims["jti"] and re.fullmatch(r"[0-9a-f]{32}", issued["jti"])
    assert (issued["tenant_id"], issued["sub"], issued["tools"], issued["prefix"]) == (
        "initech",
        "agent-7",
        ["whoami"],
        "reports",
    )
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", issued["expires_at"])
    expires = datetime.strptime(issued["expires_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    assert expires == claims["exp"] and before + 590 <= expires <= time.time() + 601
    # Without a prefix, "prefix" is JSON null; plain mode still prints only the JWT.
    bare = json.loads(
        run_cli("token", "issue", "--tenant", "initech", "--sub", "a", "--json", data_dir=data_dir).stdout
    )
    assert bare["prefix"] is None and bare["tools"] == ["list_files", "whoami"]
    plain = run_cli("token", "issue", "--tenant", "initech", "--sub", "a", data_dir=data_dir).stdout
    assert plain.count(".") == 2 and len(plain.strip().splitlines()) == 1


def test_issuing_for_a_halted_tenant_warns_but_still_prints_the_credential(data_dir: Path) -> None:
    run_cli("tenant", "halt", "initech", "--reason", "incident 42", data_dir=data_dir)
    token = run_cli("token", "issue", "--tenant", "initech", "--sub", "a", data_dir=data_dir)
    assert token.stdout.count(".") == 2
    assert token.stderr == (
        "warning: tenant initech is halted (incident 42): this token is refused until "
        "`tenantry tenant resume initech`\n"
    )
    key = run_cli("apikey", "create", "--tenant", "initech", data_dir=data_dir)
    assert key.stdout.startswith("tnty_initech_")
    assert key.stderr.startswith("warning: tenant initech is halted (incident 42): this API key is refused")
    # Positive control: an active tenant gets no warning.
    run_cli("tenant", "resume", "initech", data_dir=data_dir)
    assert run_cli("token", "issue", "--tenant", "initech", "--sub", "a", data_dir=data_dir).stderr == ""
    assert run_cli("apikey", "create", "--tenant", "initech", data_dir=data_dir).stderr == ""


def revoke(data_dir: Path, *args: str) -> tuple[int, str, str]:
    result = run_cli("token", "revoke", *args, data_dir=data_dir, check=False)
    return result.returncode, result.stdout, result.stderr


def jti_revocations(data_dir: Path) -> list[str]:
    records = run_cli("audit", "tail", "--json", "--limit", "1000", data_dir=data_dir).stdout.splitlines()
    return [
        r["detail"]["jti"]
        for r in map(json.loads, records)
        if r["event_type"] == "token_revoked" and r["detail"].get("scope") == "jti"
    ]


def test_revoke_jti_refuses_a_whole_token_and_names_its_jti(data_dir: Path) -> None:
    issued = json.loads(
        run_cli("token", "issue", "--tenant", "initech", "--sub", "a", "--json", data_dir=data_dir).stdout
    )
    code, out, err = revoke(data_dir, "--jti", issued["token"])
    assert (code, out) == (2, "")
    assert err == (
        f"error: --jti takes a token id, not a whole token; this token's jti is {issued['jti']}: "
        f"tenantry token revoke --jti {issued['jti']}\n"
    )
    assert issued["token"] not in err
    assert jti_revocations(data_dir) == []


def test_revoke_jti_refuses_an_api_key_and_an_api_key_id(data_dir: Path) -> None:
    key = run_cli("apikey", "create", "--tenant", "initech", data_dir=data_dir).stdout.strip()
    key_id = key.split("_")[2]
    code, _, err = revoke(data_dir, "--jti", key)
    assert code == 2
    assert err == (
        f"error: that is an API key (key id {key_id}), not a token id: "
        f"revoke it with `tenantry apikey revoke {key_id}`\n"
    )
    assert key.split("_")[3] not in err  # the key's secret is never echoed
    code, _, err = revoke(data_dir, "--jti", key_id)
    assert code == 2
    assert err == (
        f"error: {key_id} is the id of an API key of tenant 'initech', not a token id: "
        f"revoke the key with `tenantry apikey revoke {key_id}`\n"
    )
    assert jti_revocations(data_dir) == []


def test_revoke_jti_of_our_own_token_names_its_tenant_without_a_warning(data_dir: Path) -> None:
    issued = json.loads(
        run_cli("token", "issue", "--tenant", "initech", "--sub", "a", "--json", data_dir=data_dir).stdout
    )
    code, out, err = revoke(data_dir, "--jti", issued["jti"])
    assert (code, err) == (0, "")
    assert out == f"revoked token {issued['jti']} of tenant initech (subject a)\n"
    assert jti_revocations(data_dir) == [issued["jti"]]
    records = run_cli("audit", "tail", "--tenant", "initech", "--json", data_dir=data_dir).stdout.splitlines()
    assert any(json.loads(r)["event_type"] == "token_revoked" for r in records)  # in the tenant's own stream


def test_revoke_jti_never_issued_here_warns_and_still_records_it(data_dir: Path) -> None:
    code, out, err = revoke(data_dir, "--jti", "okta-7f3a9c")
    assert code == 0 and out == "revoked token okta-7f3a9c\n"
    assert err.startswith(
        "warning: no token with id okta-7f3a9c was issued by this deployment's issuer for this deployment"
    )
    assert "external identity provider" in err and err.count("\n") == 1
    assert jti_revocations(data_dir) == ["okta-7f3a9c"]
    # A jti our issuer did sign, but for another tenant than the one named, is warned about too.
    issued = json.loads(
        run_cli("token", "issue", "--tenant", "initech", "--sub", "a", "--json", data_dir=data_dir).stdout
    )
    run_cli("tenant", "create", "hooli", data_dir=data_dir)
    code, _, err = revoke(data_dir, "--jti", issued["jti"], "--tenant", "hooli")
    assert code == 0 and "for tenant 'hooli'" in err


def test_revoke_jti_of_a_token_exchanged_at_oauth_token_is_known(server: RunningServer) -> None:

    key = server.cli("apikey", "create", "--tenant", "acme").stdout.strip()
    response = web.post(
        server.base_url + "/oauth/token",
        data={"grant_type": "client_credentials", "client_id": key.split("_")[2], "client_secret": key},
    )
    assert response.status_code == 200, response.text
    token = response.json()["access_token"]
    jti = claims_of(token)["jti"]
    assert modern_call(server.mcp_url, token, "tools/call", WHOAMI).status_code == 200
    result = server.cli("token", "revoke", "--jti", jti)
    assert "no token with id" not in result.stderr and f"revoked token {jti} of tenant acme" in result.stdout
    deadline = time.monotonic() + 1.5
    while modern_call(server.mcp_url, token, "tools/call", WHOAMI).status_code == 200:
        assert time.monotonic() < deadline, "the revocation did not reach the server"
        time.sleep(0.05)


def test_json_output_uses_null_not_a_dash(data_dir: Path) -> None:
    run_cli("apikey", "create", "--tenant", "initech", data_dir=data_dir)
    keys = json.loads(run_cli("apikey", "list", "--tenant", "initech", "--json", data_dir=data_dir).stdout)
    assert keys[0]["expires_at"] is None and keys[0]["revoked_at"] is None
    signing = json.loads(run_cli("keys", "list", "--json", data_dir=data_dir).stdout)
    assert signing[0]["retires_at"] is None and signing[0]["state"] == "current"
    tenant = json.loads(run_cli("tenant", "show", "initech", "--json", data_dir=data_dir).stdout)
    assert tenant["halted_reason"] is None
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", tenant["created_at"])
    for command in (
        ("tenant", "list", "--json"),
        ("tenant", "show", "initech", "--json"),
        ("apikey", "list", "--tenant", "initech", "--json"),
        ("keys", "list", "--json"),
        ("keys", "list", "--audit", "--json"),
        ("secret", "list", "--tenant", "initech", "--json"),
    ):
        out = run_cli(*command, data_dir=data_dir).stdout
        assert '"-"' not in out, command


ISO_SECOND = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


@pytest.mark.parametrize("columns", ["40", "80"])
def test_tables_print_every_timestamp_and_id_whole(data_dir: Path, columns: str) -> None:
    env = {"COLUMNS": columns}
    run_cli(
        "apikey", "create", "--tenant", "initech", "--name", "a long name for the payroll integration",
        "--expires-in", "90d", data_dir=data_dir,
    )  # fmt: skip
    run_cli("secret", "set", "--tenant", "initech", "crm_api_key", input="s3cret", data_dir=data_dir)
    key = json.loads(run_cli("apikey", "list", "--tenant", "initech", "--json", data_dir=data_dir).stdout)[0]
    kid = json.loads(run_cli("keys", "list", "--json", data_dir=data_dir).stdout)[0]
    secret = json.loads(run_cli("secret", "list", "--tenant", "initech", "--json", data_dir=data_dir).stdout)[0]
    tenant = json.loads(run_cli("tenant", "show", "initech", "--json", data_dir=data_dir).stdout)
    expected = {
        ("apikey", "list", "--tenant", "initech"): [key["key_id"], key["created_at"], key["expires_at"]],
        ("keys", "list"): [kid["kid"], kid["created_at"], "EdDSA", "in JWKS"],
        ("secret", "list", "--tenant", "initech"): [secret["created_at"], secret["updated_at"], "crm_api_key"],
        ("tenant", "show", "initech"): [tenant["created_at"], "halted_reason"],
        ("tenant", "list"): ["initech", "logical", "active"],
    }
    for command, values in expected.items():
        out = run_cli(*command, data_dir=data_dir, env=env).stdout
        for value in values:
            assert value in out, (command, value, out)
        assert "…" not in out, (command, out)
        assert all(len(stamp) == 20 for stamp in ISO_SECOND.findall(out))
