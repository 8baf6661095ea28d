"""Revocation rules: by jti, by subject within a tenant, for a whole tenant."""

from __future__ import annotations

from tenantry.core.credentials import Revocation, RevocationList
from tenantry.core.identity import Principal


def principal(
    tenant: str = "acme", sub: str = "alice", jti: str = "j1", iat: int = 1000, kind: str = "jwt"
) -> Principal:
    return Principal(
        issuer="https://issuer",
        tenant_id=tenant,
        subject=sub,
        allowed_tools=frozenset({"whoami"}),
        token_id=jti,
        expires_at=iat + 900,
        issued_at=iat,
        credential_kind=kind,  # type: ignore[arg-type]
    )


def test_an_empty_list_revokes_nothing() -> None:
    assert RevocationList().reason(principal()) is None


def test_a_revoked_jti_is_refused_and_other_tokens_are_not() -> None:
    revocations = RevocationList([Revocation("jti", "acme", 1000, 5000, jti="j1")])
    assert revocations.reason(principal(jti="j1")) == "token revoked"
    assert revocations.reason(principal(jti="j2")) is None


def test_a_jti_revocation_without_a_tenant_still_applies() -> None:
    revocations = RevocationList([Revocation("jti", None, 1000, 5000, jti="j1")])
    assert revocations.reason(principal(tenant="globex", jti="j1")) is not None


def test_a_subject_revocation_covers_tokens_issued_until_its_cutoff_only() -> None:
    revocations = RevocationList([Revocation("subject", "acme", 1000, 5000, subject="alice", cutoff=1000)])
    assert revocations.reason(principal(iat=999)) is not None
    assert revocations.reason(principal(iat=1000)) is not None  # same second: revoked too
    assert revocations.reason(principal(iat=1001)) is None  # issued after the revocation
    assert revocations.reason(principal(sub="bob", iat=999)) is None
    assert revocations.reason(principal(tenant="globex", iat=999)) is None  # alice of globex is someone else


def test_a_tenant_revocation_covers_every_subject_of_that_tenant_only() -> None:
    revocations = RevocationList([Revocation("tenant", "acme", 1000, 5000, cutoff=1000)])
    assert revocations.reason(principal(sub="alice")) is not None
    assert revocations.reason(principal(sub="bob")) is not None
    assert revocations.reason(principal(tenant="globex")) is None


def test_the_latest_cutoff_wins() -> None:
    revocations = RevocationList(
        [
            Revocation("tenant", "acme", 1000, 5000, cutoff=1000),
            Revocation("tenant", "acme", 2000, 6000, cutoff=2000),
        ]
    )
    assert revocations.reason(principal(iat=1500)) is not None


def test_api_keys_used_directly_are_revoked_with_the_key_not_by_token_rules() -> None:
    revocations = RevocationList([Revocation("tenant", "acme", 1000, 5000, cutoff=1000)])
    assert revocations.reason(principal(kind="api_key", iat=10)) is None
