"""Signing-key rotation over real HTTP: both keys published, old tokens valid until they expire,
the old key retired from JWKS by itself afterwards, and an emergency rotation that retires it now."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

from joserfc import jwt
from joserfc.jwk import OKPKey

from tests.support import web
from tests.support.rpc import LegacySession, modern_call
from tests.support.server import start_server
from tests.support.timing import first_change

WHOAMI = {"name": "whoami", "arguments": {}}


def kid_of(token: str) -> str:
    return json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))["kid"]


def published(base_url: str) -> set[str]:
    return {k["kid"] for k in web.get(base_url + "/.well-known/jwks.json").json()["keys"]}


def test_rotation_keeps_old_tokens_valid_until_expiry_then_retires_the_old_key(tmp_path: Path) -> None:
    short_lived = {
        # Long enough for a rotation and two CLI runs on a loaded machine, short enough to wait out.
        "TENANTRY_AUTH__MAX_TOKEN_LIFETIME": "10",
        "TENANTRY_AUTH__DEFAULT_TOKEN_TTL": "10",
        "TENANTRY_AUTH__CLOCK_LEEWAY": "0",
    }
    server = start_server(tmp_path / "data", env=short_lived)  # the CLI shares the environment
    try:
        old_token = server.token("acme", "rotator")
        old_kid = kid_of(old_token)
        session = LegacySession(server.mcp_url, old_token)
        assert session.call("tools/call", WHOAMI).status_code == 200
        out = server.cli("keys", "rotate").stdout
        assert old_kid in out
        new_token = server.token("acme", "rotator")
        new_kid = kid_of(new_token)
        assert new_kid != old_kid
        assert published(server.base_url) == {old_kid, new_kid}
        # The old key's token keeps working on its live session; the new one works too.
        assert session.call("tools/call", WHOAMI).status_code == 200
        assert modern_call(server.mcp_url, new_token, "tools/call", WHOAMI).status_code == 200
        # After the overlap (the maximum token lifetime) the old key leaves JWKS by itself.
        first_change(lambda: published(server.base_url), lambda kids: old_kid not in kids, within=20)
        listed = {k["kid"]: k["state"] for k in json.loads(server.cli("keys", "list", "--json").stdout)}
        assert listed == {old_kid: "retired", new_kid: "current"}
        # A token the retired key signs now (a stolen key) is refused even though it is fresh.
        keys = json.loads((server.data_dir / "keys" / "signing-keys.json").read_text())["keys"]
        old_private = OKPKey.import_key(next(k["jwk"] for k in keys if k["kid"] == old_kid))
        now = int(time.time())
        claims = {
            "iss": server.base_url,
            "aud": server.mcp_url,
            "sub": "thief",
            "tenant_id": "acme",
            "allowed_tools": ["whoami"],
            "iat": now,
            "nbf": now,
            "exp": now + 3,
            "jti": "stolen",
        }
        forged = jwt.encode({"alg": "EdDSA", "kid": old_kid}, claims, old_private, algorithms=["EdDSA"])
        refused = modern_call(server.mcp_url, forged, "tools/call", WHOAMI)
        assert refused.status_code == 401 and "unknown or retired key" in refused.text
        # The retirement is audited by the server itself.
        events, _ = first_change(
            lambda: [r for r in server.audit_records("_system") if r["event_type"] in ("key_rotated", "key_retired")],
            lambda found: len(found) == 2,
            within=5,
        )
        assert [e["event_type"] for e in events] == ["key_rotated", "key_retired"]
        assert events[1]["detail"]["kid"] == old_kid
    finally:
        server.stop()


def test_an_emergency_rotation_refuses_the_old_keys_tokens_within_a_second(tmp_path: Path) -> None:
    server = start_server(tmp_path / "data")
    try:
        token = server.token("acme", "victim")
        session = LegacySession(server.mcp_url, token)
        assert session.call("tools/call", WHOAMI).status_code == 200
        server.cli("keys", "rotate", "--retire-old-now")
        response, elapsed = first_change(
            lambda: session.call("tools/call", WHOAMI), lambda r: r.status_code != 200, within=3
        )
        assert response.status_code == 401 and "unknown or retired key" in response.text
        assert elapsed < 1.5
        assert kid_of(token) not in published(server.base_url)
        fresh = server.token("acme", "victim")
        assert modern_call(server.mcp_url, fresh, "tools/call", WHOAMI).status_code == 200
    finally:
        server.stop()


def test_keys_retire_refuses_the_retired_keys_tokens_within_a_second_and_is_audited(tmp_path: Path) -> None:
    server = start_server(tmp_path / "data")
    try:
        old_token = server.token("acme", "victim")
        old_kid = kid_of(old_token)
        session = LegacySession(server.mcp_url, old_token)
        assert session.call("tools/call", WHOAMI).status_code == 200
        server.cli("keys", "rotate")
        new_token = server.token("acme", "victim")
        assert session.call("tools/call", WHOAMI).status_code == 200  # still in its overlap
        refused = server.cli("keys", "retire", kid_of(new_token), check=False)
        assert refused.returncode == 2 and "is the current signing key" in refused.stderr
        assert server.cli("keys", "retire", old_kid, "--reason", "leaked").stdout == (
            f"retired key {old_kid}: tokens it signed are refused\n"
        )
        response, elapsed = first_change(
            lambda: session.call("tools/call", WHOAMI), lambda r: r.status_code != 200, within=3
        )
        assert response.status_code == 401 and "unknown or retired key" in response.text
        assert elapsed < 1.5
        assert published(server.base_url) == {kid_of(new_token)}
        assert modern_call(server.mcp_url, new_token, "tools/call", WHOAMI).status_code == 200
        listed = {k["kid"]: k["state"] for k in json.loads(server.cli("keys", "list", "--json").stdout)}
        assert listed == {old_kid: "retired", kid_of(new_token): "current"}
        retirements = [r for r in server.audit_records("_system") if r["event_type"] == "key_retired"]
        assert [(r["detail"]["kid"], r["reason"], r["actor"].startswith("cli:")) for r in retirements] == [
            (old_kid, "leaked", True)
        ]
        assert server.cli("keys", "retire", old_kid).stdout == f"key {old_kid} was already retired\n"
        unknown = server.cli("keys", "retire", "nope", check=False)
        assert unknown.returncode == 1 and "no signing key 'nope'" in unknown.stderr
    finally:
        server.stop()


def test_an_emergency_rotation_after_a_normal_one_refuses_both_older_keys(tmp_path: Path) -> None:
    server = start_server(tmp_path / "data")
    try:
        first = server.token("acme", "a")
        server.cli("keys", "rotate")
        second = server.token("acme", "a")
        out = server.cli("keys", "rotate", "--retire-old-now").stdout
        assert kid_of(first) in out and kid_of(second) in out
        for token in (first, second):
            response, _ = first_change(
                lambda token=token: modern_call(server.mcp_url, token, "tools/call", WHOAMI),
                lambda r: r.status_code != 200,
                within=3,
            )
            assert response.status_code == 401
        assert modern_call(server.mcp_url, server.token("acme", "a"), "tools/call", WHOAMI).status_code == 200
    finally:
        server.stop()
