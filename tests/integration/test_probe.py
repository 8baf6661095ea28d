"""``tenantry probe`` passes against a correctly configured Tenantry and fails, with the right
rows, against deliberately weakened servers: the probe must be able to fail."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from joserfc import jwt
from joserfc.jwk import OKPKey

from tests.support import web
from tests.support.server import RunningServer, free_port, run_cli, start_server


@pytest.fixture(scope="module")
def tenantry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    server = start_server(tmp_path_factory.mktemp("probe") / "data")
    yield server
    server.stop()


def _weak_server(mode: str) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.weak_mcp", mode, str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                web.get(url, timeout=1)
                break
            except httpx2.TransportError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise AssertionError(f"weak server {mode} did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def trusting_url() -> Iterator[str]:
    yield from _weak_server("no-acl")


@pytest.fixture(scope="module")
def refusing_url() -> Iterator[str]:
    yield from _weak_server("refuse-all")


def foreign_token(tenant: str) -> str:
    """A JWT of the attacker's own making (the weak servers never check signatures)."""
    key = OKPKey.generate_key("Ed25519", auto_kid=True)
    now = int(time.time())
    claims = {"sub": "alice", "tenant_id": tenant, "iat": now, "exp": now + 600, "allowed_tools": ["whoami"]}
    return jwt.encode({"alg": "EdDSA", "kid": key.kid}, claims, key, algorithms=["EdDSA"])


def probe(url: str, token_a: str, token_b: str, *extra: str) -> tuple[int, dict]:
    result = run_cli(
        "probe", url, "--token-a", token_a, "--token-b", token_b, "--json", *extra, check=False, timeout=180
    )
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout)


def rows(run: dict) -> dict[str, str]:
    return {c["id"]: c["status"] for c in run["checks"]}


@pytest.fixture(scope="module")
def tenantry_run(tenantry: RunningServer) -> tuple[int, dict]:
    expired = tenantry.token("acme", "alice", ttl="1s")
    acme, globex = tenantry.token("acme", "alice", ttl="30m"), tenantry.token("globex", "alice", ttl="30m")
    time.sleep(1.2)
    return probe(
        tenantry.mcp_url,
        acme,
        globex,
        "--token-expired",
        expired,
        "--audit-data-dir",
        str(tenantry.data_dir),
        "--data-dir",
        str(tenantry.data_dir),
    )


def test_probe_passes_against_a_correctly_configured_tenantry(tenantry_run: tuple[int, dict]) -> None:
    code, run = tenantry_run
    statuses = rows(run)
    assert code == 0, [c for c in run["checks"] if c["status"] == "fail"]
    assert run["result"] == "pass" and run["tenants"] == {"a": "acme", "b": "globex"}
    assert not [i for i, s in statuses.items() if s == "fail"]
    must_pass = [
        "discover_a",
        "discover_b",
        "era_sessionless",
        "cross_tools_a",
        "cross_tools_b",
        "paths_read_file",
        "paths_list_files",
        "override_arguments",
        "override_meta",
        "override_headers",
        "override_sessionless",
        "hijack_a_uses_b",
        "hijack_b_uses_a",
        "hijack_session_id_alone",
        "hijack_sessionless",
        "token_expired",
        "token_alg_none",
        "token_random_key_same_kid",
        "token_kid_swap",
        "token_hs256_public_key",
        "token_tampered_tenant",
        "token_signature_stripped",
        "audit",
    ]
    assert {i: statuses.get(i) for i in must_pass} == dict.fromkeys(must_pass, "pass")
    # The demo has no resources or prompts: said, never passed.
    assert statuses["cross_resources_a"] == statuses["cross_prompts_a"] == "not_checked"


def test_the_run_is_stored_as_evidence(tenantry: RunningServer, tenantry_run: tuple[int, dict]) -> None:
    _, run = tenantry_run
    stored = sorted((tenantry.data_dir / "evidence").glob("probe-*.json"))
    assert stored, "no evidence file"
    body = json.loads(stored[-1].read_text())
    assert body["sha256"] == run["sha256"] and body["format"] == "tenantry-probe/1"
    assert stored[-1].stat().st_mode & 0o077 == 0
    assert not re.search(r"eyJ[\w-]+\.[\w-]+\.", stored[-1].read_text()), "a token in the evidence"


def test_the_probe_fails_against_a_server_that_ignores_tokens_and_acls(trusting_url: str) -> None:
    code, run = probe(trusting_url, foreign_token("acme"), foreign_token("globex"))
    statuses = rows(run)
    assert code == 1 and run["result"] == "fail"
    must_fail = [
        "cross_tools_a",
        "cross_tools_b",
        "cross_resources_a",
        "cross_prompts_a",
        "paths_read_file",
        "override_arguments",
        "override_headers",
        "override_sessionless",
        "hijack_b_uses_a",
        "hijack_session_id_alone",
        "hijack_sessionless",
        "token_missing",
        "token_alg_none",
        "token_random_key_own_kid",
        "token_tampered_tenant",
        "token_signature_stripped",
    ]
    assert {i: statuses.get(i) for i in must_fail} == dict.fromkeys(must_fail, "fail")
    # What it does get right still passes: the rows are about the property, not the server.
    assert statuses["discover_a"] == statuses["override_meta"] == "pass"
    # No audit access was given and no JWKS is published: said so, not passed.
    assert statuses["audit"] == statuses["token_hs256_public_key"] == "not_checked"


def test_a_server_that_refuses_everything_fails_every_positive_control(refusing_url: str) -> None:
    code, run = probe(refusing_url, foreign_token("acme"), foreign_token("globex"))
    statuses = rows(run)
    assert code == 1
    assert statuses["discover_a"] == statuses["discover_b"] == "fail"
    assert "pass" not in statuses.values()  # nothing passes against a server that serves nothing
    token_rows = [c for c in run["checks"] if c["group"] == "tokens" and c["status"] != "not_checked"]
    assert token_rows and all(c["status"] == "fail" for c in token_rows)
    assert "genuine token" in token_rows[0]["detail"]
    for group in ("cross-tenant", "scope", "tenant override", "sessions", "audit"):
        assert [c["status"] for c in run["checks"] if c["group"] == group] == ["fail"], group


def test_strict_fails_on_what_could_not_be_checked(tenantry: RunningServer) -> None:
    acme, globex = tenantry.token("acme", "alice"), tenantry.token("globex", "alice")
    code, run = probe(tenantry.mcp_url, acme, globex, "--strict")
    assert code == 1 and run["result"] == "fail" and run["strict"] is True
    assert not [c for c in run["checks"] if c["status"] == "fail"]


def test_the_table_names_each_failure(trusting_url: str) -> None:
    result = run_cli(
        "probe", trusting_url, "--token-a", foreign_token("acme"), "--token-b", foreign_token("globex"), check=False
    )
    assert result.returncode == 1
    assert "FAIL" in result.stdout and "probe FAILED" in result.stdout
    assert "cannot call" in result.stdout


def test_tokens_can_come_from_the_environment(tenantry: RunningServer, tmp_path: Path) -> None:
    env = {
        "TENANTRY_PROBE_TOKEN_A": tenantry.token("acme", "alice"),
        "TENANTRY_PROBE_TOKEN_B": tenantry.token("globex", "bob"),
    }
    out = tmp_path / "run.json"
    result = run_cli("probe", tenantry.mcp_url, "--out", str(out), env=env, check=False, timeout=180)
    assert result.returncode == 0, result.stdout
    assert json.loads(out.read_text())["result"] == "pass"
    again = run_cli("probe", tenantry.mcp_url, "--out", str(out), env=env, check=False)
    assert again.returncode == 2 and "refusing to overwrite" in again.stderr


@pytest.mark.parametrize("url", ["not-a-url", "ftp://127.0.0.1/mcp"])
def test_a_bad_url_is_a_usage_error(url: str) -> None:
    result = run_cli("probe", url, "--token-a", "x", "--token-b", "y", check=False)
    assert result.returncode == 2
    assert result.stderr.startswith("error: not an http(s) URL")


def test_an_unreachable_deployment_is_one_clear_error() -> None:
    url = f"http://127.0.0.1:{free_port()}/mcp"
    result = run_cli("probe", url, "--token-a", "x", "--token-b", "y", check=False)
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: cannot reach {url}") and "Traceback" not in result.stderr
