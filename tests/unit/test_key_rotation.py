"""Rotating the built-in issuer's signing key: overlap, automatic retirement, emergency retirement."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tenantry.auth.keys import KeyRing
from tenantry.auth.tokens import JwtVerifier, TokenIssuer
from tenantry.core.errors import InvalidCredential

ISS = "http://127.0.0.1:8750"
AUD = "http://127.0.0.1:8750/mcp"


@pytest.fixture
def ring(tmp_path: Path) -> KeyRing:
    keys = KeyRing(tmp_path / "keys")
    keys.ensure()
    return keys


def issuer(ring: KeyRing) -> TokenIssuer:
    return TokenIssuer(ring, issuer=ISS, audience=AUD, default_ttl=900, max_lifetime=3600)


def verifier(ring: KeyRing) -> JwtVerifier:
    return JwtVerifier(ring, issuer=ISS, audience=AUD, max_lifetime=3600, leeway=0, max_token_bytes=8192)


def test_rotation_publishes_both_keys_and_signs_with_the_new_one(ring: KeyRing) -> None:
    old = ring.current()
    fresh = ring.rotate(overlap=3600)
    assert ring.current().kid == fresh.kid != old.kid
    assert {k["kid"] for k in ring.jwks()["keys"]} == {old.kid, fresh.kid}
    states = {k.kid: k.state(time.time()) for k in ring.all()}
    assert states == {old.kid: "previous", fresh.kid: "current"}
    token = issuer(ring).issue(tenant_id="acme", subject="a", allowed_tools=["whoami"]).token
    assert verifier(ring).verify_sync(token).tenant_id == "acme"


def test_a_token_of_the_old_key_stays_valid_until_the_key_retires(ring: KeyRing) -> None:
    old_token = issuer(ring).issue(tenant_id="acme", subject="a", allowed_tools=["whoami"]).token
    check = verifier(ring)
    assert check.verify_sync(old_token).subject == "a"  # cached from here on
    now = int(time.time())
    old = ring.current()
    ring.rotate(overlap=60, now=now)
    assert check.verify_sync(old_token).subject == "a"
    assert check.verify_sync(old_token, now=now + 59).subject == "a"
    # Past the overlap the old key is retired: its tokens (even cached ones) are refused.
    assert ring.get(old.kid) is not None
    with pytest.raises(InvalidCredential):
        check.verify_sync(old_token, now=now + 61)


def test_retirement_is_persisted_and_survives_a_reload(ring: KeyRing, tmp_path: Path) -> None:
    old = ring.current()
    now = int(time.time())
    ring.rotate(overlap=10, now=now - 20)  # the overlap is already over
    assert old.kid not in {k["kid"] for k in ring.jwks()["keys"]}
    assert [k.kid for k in ring.retire_expired()] == [old.kid]
    assert ring.retire_expired() == []
    reloaded = KeyRing(tmp_path / "keys")
    reloaded.ensure()
    assert {k.kid: k.status for k in reloaded.all()}[old.kid] == "retired"
    assert reloaded.get(old.kid) is None
    assert reloaded.get(old.kid, include_retired=True) is not None


def test_emergency_rotation_retires_the_old_key_at_once(ring: KeyRing) -> None:
    token = issuer(ring).issue(tenant_id="acme", subject="a", allowed_tools=["whoami"]).token
    check = verifier(ring)
    check.verify_sync(token)
    old = ring.current()
    ring.rotate(overlap=3600, retire_old_now=True)
    assert old.kid not in {k["kid"] for k in ring.jwks()["keys"]}
    with pytest.raises(InvalidCredential, match="unknown or retired key"):
        check.verify_sync(token)


def test_a_second_rotation_keeps_every_key_that_may_still_verify(ring: KeyRing) -> None:
    first = ring.current()
    second = ring.rotate(overlap=3600)
    third = ring.rotate(overlap=3600)
    published = {k["kid"] for k in ring.jwks()["keys"]}
    assert published == {first.kid, second.kid, third.kid}
    assert ring.current().kid == third.kid


def test_an_emergency_rotation_after_a_normal_one_retires_every_older_key(ring: KeyRing) -> None:
    """Regression: it retired only the key current at the time and left the one before it verifying."""
    first = ring.current()
    first_token = issuer(ring).issue(tenant_id="acme", subject="a", allowed_tools=["whoami"]).token
    second = ring.rotate(overlap=3600)
    second_token = issuer(ring).issue(tenant_id="acme", subject="a", allowed_tools=["whoami"]).token
    third = ring.rotate(overlap=3600, retire_old_now=True)
    states = {k.kid: k.state(time.time()) for k in ring.all()}
    assert states == {first.kid: "retired", second.kid: "retired", third.kid: "current"}
    assert {k["kid"] for k in ring.jwks()["keys"]} == {third.kid}
    check = verifier(ring)
    for token in (first_token, second_token):
        with pytest.raises(InvalidCredential, match="unknown or retired key"):
            check.verify_sync(token)
    fresh = issuer(ring).issue(tenant_id="acme", subject="a", allowed_tools=["whoami"]).token
    assert check.verify_sync(fresh).tenant_id == "acme"


def test_retiring_a_previous_key_refuses_its_tokens_and_keeps_the_current_one(ring: KeyRing) -> None:
    old_token = issuer(ring).issue(tenant_id="acme", subject="a", allowed_tools=["whoami"]).token
    old = ring.current()
    fresh = ring.rotate(overlap=3600)
    new_token = issuer(ring).issue(tenant_id="acme", subject="a", allowed_tools=["whoami"]).token
    check = verifier(ring)
    assert check.verify_sync(old_token).subject == "a"  # cached: the retirement must still reach it
    retired, changed = ring.retire(old.kid)
    assert changed and retired.status == "retired"
    with pytest.raises(InvalidCredential, match="unknown or retired key"):
        check.verify_sync(old_token)
    assert check.verify_sync(new_token).subject == "a"
    assert ring.current().kid == fresh.kid
    assert {k["kid"] for k in ring.jwks()["keys"]} == {fresh.kid}
    assert ring.retire(old.kid)[1] is False  # idempotent


def test_the_current_key_and_unknown_keys_cannot_be_retired(ring: KeyRing) -> None:
    from tenantry.core.errors import NotFound, UsageError

    current = ring.current()
    with pytest.raises(UsageError, match="is the current signing key"):
        ring.retire(current.kid)
    with pytest.raises(NotFound, match="no signing key"):
        ring.retire("no-such-kid")
    assert ring.current().kid == current.kid and ring.current().status == "current"


def test_keys_retire_takes_a_kid_that_begins_with_a_dash(tmp_path: Path) -> None:
    # A thumbprint kid is base64url: one in 64 begins with "-", which is not an option here.
    from typer.testing import CliRunner

    from tenantry.cli.main import app
    from tenantry.core.settings import load_settings
    from tenantry.runtime import Runtime

    Runtime(load_settings(data_dir=tmp_path / "data"), create=True).close()
    runner = CliRunner()
    data = ["--data-dir", str(tmp_path / "data")]
    dashed = runner.invoke(app, ["keys", "retire", "-qGcjGlRl1ZF6IZQ", *data])
    assert "no signing key '-qGcjGlRl1ZF6IZQ'" in str(dashed.exception)  # looked up, not parsed as options
    typo = runner.invoke(app, ["keys", "retire", "somekid", "--reasn", "x", *data])
    assert typo.exit_code == 2 and "--reasn" in typo.output  # an unknown option is still refused
