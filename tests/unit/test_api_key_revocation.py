"""`apikey revoke` and the tokens exchanged for the key: none outlives the key, including one a
server exchanged after the revocation, before its view of the control plane caught up."""

from __future__ import annotations

from pathlib import Path

from tenantry.admin.actions import create_api_key, revoke_api_key
from tenantry.auth.apikeys import api_key_subject
from tenantry.controlplane.factory import open_tenant_store
from tenantry.core.credentials import RevocationList
from tenantry.core.identity import Principal

LIFETIME = 3600


def exchanged(key_id: str, iat: int, tenant: str = "acme", subject: str | None = None) -> Principal:
    return Principal(
        issuer="https://issuer",
        tenant_id=tenant,
        subject=subject or api_key_subject(key_id),
        allowed_tools=frozenset({"whoami"}),
        token_id=f"j{iat}",
        expires_at=iat + 900,
        issued_at=iat,
        credential_kind="jwt",
    )


def test_a_token_exchanged_a_second_after_the_revoke_is_revoked_too(tmp_path: Path) -> None:
    store = open_tenant_store(None, tmp_path)
    try:
        store.create_tenant("acme", tools=["whoami"])
        issued, _ = create_api_key(store, "acme", actor="test")
        other, _ = create_api_key(store, "acme", actor="test")
        key_id = issued.record.key_id
        revoke_api_key(store, key_id, actor="test", longest_lifetime=LIFETIME, now=1000)
        revocations = RevocationList(store.list_revocations(1000))
        assert revocations.reason(exchanged(key_id, 999)) is not None
        # Exchanged by a server that had not yet seen the revocation (its poll lags behind).
        assert revocations.reason(exchanged(key_id, 1001)) is not None
        assert revocations.reason(exchanged(key_id, 1000 + LIFETIME)) is not None
        # Positive controls: another key's tokens, and a person of the same tenant, are untouched.
        assert revocations.reason(exchanged(other.record.key_id, 1001)) is None
        assert revocations.reason(exchanged(key_id, 1001, subject="alice")) is None
        # The entry lasts until every token it catches has expired.
        assert RevocationList(store.list_revocations(1000 + 2 * LIFETIME - 1)).reason(exchanged(key_id, 1001))
    finally:
        store.close()
