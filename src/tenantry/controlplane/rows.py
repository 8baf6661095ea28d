"""Row shapes of the credential and secret tables, shared by the SQLite and PostgreSQL stores."""

from __future__ import annotations

import json
from typing import Any

from tenantry.core.credentials import ApiKeyRecord, Revocation
from tenantry.core.secrets import SecretInfo, WrappedKey

__all__ = [
    "revocation_row",
    "revocation_from_row",
    "api_key_row",
    "api_key_from_row",
    "wrapped_key_from_row",
    "secret_info_from_row",
]


def revocation_row(r: Revocation) -> tuple[Any, ...]:
    return (r.kind, r.tenant_id, r.subject, r.jti, r.cutoff, r.reason, r.actor, r.created_at, r.expires_at)


def revocation_from_row(row: tuple[Any, ...]) -> Revocation:
    kind, tenant_id, subject, jti, cutoff, reason, actor, created_at, expires_at = row
    return Revocation(
        kind=kind,
        tenant_id=tenant_id,
        subject=subject,
        jti=jti,
        cutoff=None if cutoff is None else int(cutoff),
        reason=reason,
        actor=actor,
        created_at=int(created_at),
        expires_at=int(expires_at),
    )


def api_key_row(k: ApiKeyRecord) -> tuple[Any, ...]:
    return (
        k.key_id,
        k.tenant_id,
        k.name,
        json.dumps(sorted(k.tools)),
        k.salt,
        k.secret_hash,
        k.created_at,
        k.expires_at,
        k.revoked_at,
        k.created_by,
    )


def api_key_from_row(row: tuple[Any, ...]) -> ApiKeyRecord:
    key_id, tenant_id, name, tools, salt, secret_hash, created_at, expires_at, revoked_at, created_by = row
    return ApiKeyRecord(
        key_id=str(key_id),
        tenant_id=str(tenant_id),
        name=str(name),
        tools=frozenset(json.loads(tools)),
        salt=bytes(salt),
        secret_hash=bytes(secret_hash),
        created_at=int(created_at),
        expires_at=None if expires_at is None else int(expires_at),
        revoked_at=None if revoked_at is None else int(revoked_at),
        created_by=created_by,
    )


def wrapped_key_from_row(row: tuple[Any, ...]) -> WrappedKey:
    key_id, wrapped, created_at = row
    return WrappedKey(key_id=str(key_id), wrapped=bytes(wrapped), created_at=int(created_at))


def secret_info_from_row(row: tuple[Any, ...]) -> SecretInfo:
    name, created_at, updated_at = row
    return SecretInfo(name=str(name), created_at=int(created_at), updated_at=int(updated_at))
