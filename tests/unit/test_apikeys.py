"""API keys: shape, storage (salted hash only) and verification."""

from __future__ import annotations

import dataclasses

import pytest

from tenantry.auth.apikeys import (
    API_KEY_ISSUER,
    ApiKeyVerifier,
    api_key_subject,
    generate_api_key,
    key_id_of,
    parse_api_key,
)
from tenantry.core.credentials import ApiKeyRecord
from tenantry.core.errors import InvalidCredential, UsageError

pytestmark = pytest.mark.anyio


def verifier_for(*records: ApiKeyRecord) -> ApiKeyVerifier:
    by_id = {r.key_id: r for r in records}
    return ApiKeyVerifier(by_id.get)


def test_the_key_prefix_names_the_tenant_and_the_record_holds_no_secret() -> None:
    issued = generate_api_key("acme", ["whoami"], name="bot")
    assert issued.key.startswith("tnty_acme_")
    parsed = parse_api_key(issued.key)
    assert (parsed.tenant_id, parsed.key_id) == ("acme", issued.record.key_id)
    stored = repr(dataclasses.astuple(issued.record)).encode()
    assert parsed.secret.encode() not in stored
    assert len(issued.record.salt) == 16 and len(issued.record.secret_hash) == 32


def test_two_keys_never_share_secret_salt_or_id() -> None:
    a, b = generate_api_key("acme", []), generate_api_key("acme", [])
    assert a.key != b.key and a.record.salt != b.record.salt and a.record.key_id != b.record.key_id


async def test_a_valid_key_verifies_to_its_tenant_and_tools() -> None:
    issued = generate_api_key("acme", ["whoami", "query_crm"])
    principal = await verifier_for(issued.record).verify(issued.key)
    assert principal.tenant_id == "acme"
    assert principal.subject == api_key_subject(issued.record.key_id)
    assert principal.issuer == API_KEY_ISSUER and principal.credential_kind == "api_key"
    assert principal.allowed_tools == {"whoami", "query_crm"}


def _with_secret(key: str, secret: str) -> str:
    return key.rsplit("_", 1)[0] + "_" + secret


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda k: _with_secret(k, "A" * 43), id="wrong-secret"),
        pytest.param(lambda k: k.replace("tnty_acme_", "tnty_globex_"), id="other-tenant-prefix"),
        pytest.param(lambda k: k[:-1], id="truncated"),
        pytest.param(lambda k: k + "x", id="extended"),
        pytest.param(lambda k: k.replace("tnty_", "tnty__"), id="extra-separator"),
        pytest.param(lambda k: k.upper(), id="upper-case"),
        pytest.param(lambda k: "tnty_acme_0000000000000000_" + k.rsplit("_", 1)[1], id="unknown-key-id"),
    ],
)
async def test_a_mangled_key_is_refused(mangle: object) -> None:
    issued = generate_api_key("acme", ["whoami"])
    with pytest.raises(InvalidCredential):
        await verifier_for(issued.record).verify(mangle(issued.key))  # type: ignore[operator]
    assert (await verifier_for(issued.record).verify(issued.key)).tenant_id == "acme"  # positive control


async def test_unknown_id_and_wrong_secret_get_the_same_answer() -> None:
    issued = generate_api_key("acme", ["whoami"])
    messages = set()
    for candidate in (_with_secret(issued.key, "B" * 43), "tnty_acme_0123456789abcdef_" + "C" * 43):
        with pytest.raises(InvalidCredential) as refused:
            await verifier_for(issued.record).verify(candidate)
        messages.add(refused.value.message)
    assert messages == {"API key not valid"}


async def test_a_revoked_or_expired_key_is_refused() -> None:
    issued = generate_api_key("acme", ["whoami"], expires_at=2_000_000_000)
    revoked = dataclasses.replace(issued.record, revoked_at=1)
    with pytest.raises(InvalidCredential, match="revoked"):
        await verifier_for(revoked).verify(issued.key)
    with pytest.raises(InvalidCredential, match="expired"):
        await verifier_for(issued.record).authenticate(issued.key, now=2_000_000_001)


def test_key_id_of_accepts_an_id_or_a_whole_key() -> None:
    issued = generate_api_key("acme", [])
    assert key_id_of(issued.key) == issued.record.key_id
    assert key_id_of(issued.record.key_id.upper()) == issued.record.key_id
    with pytest.raises(UsageError):
        key_id_of("not-a-key")
