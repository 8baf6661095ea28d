"""What an operator means by a token id: checks before ``token revoke --jti``.

Tokens of the built-in issuer carry a random ``jti`` (32 hex digits) and every one is
recorded as a ``token_issued`` audit event (by ``tenantry token issue`` and by the
``/oauth/token`` exchange). A value that is a whole JWT, an API key or an API key's id is a
mistake with a better command; a value no ``token_issued`` record names may still be an
external identity provider's ``jti``, so it is only warned about.
"""

from __future__ import annotations

import base64
import json
import string
from dataclasses import dataclass
from typing import Any

from tenantry.audit.store.base import AuditStore
from tenantry.auth.apikeys import key_id_of, looks_like_api_key
from tenantry.controlplane.base import ControlStore
from tenantry.core.errors import UsageError

__all__ = ["IssuedTokenRecord", "refuse_non_token_id", "find_issued_token"]


@dataclass(frozen=True, slots=True)
class IssuedTokenRecord:
    """The ``token_issued`` audit record of one of our own tokens."""

    jti: str
    tenant_id: str
    subject: str | None
    issued_at: str
    """The record's timestamp (UTC ISO 8601)."""
    expires_at: int | None


def _jwt_payload(value: str) -> dict[str, Any] | None:
    parts = value.split(".")
    if len(parts) != 3 or not value.startswith("eyJ"):
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, UnicodeDecodeError):
        return {}
    return payload if isinstance(payload, dict) else {}


def refuse_non_token_id(value: str, store: ControlStore) -> None:
    """Refuse a whole JWT, an API key or an API key id given where a token id (``jti``) belongs.

    :raises UsageError: naming what the value looks like and the command to use instead.
    """
    payload = _jwt_payload(value)
    if payload is not None:
        jti = payload.get("jti")
        if isinstance(jti, str) and jti.isprintable() and 0 < len(jti) <= 128:
            raise UsageError(
                f"--jti takes a token id, not a whole token; this token's jti is {jti}: "
                f"tenantry token revoke --jti {jti}"
            )
        raise UsageError(
            "--jti takes a token id (the token's jti claim), not a whole token; `tenantry token issue --json` prints it"
        )
    if looks_like_api_key(value):
        key_id = key_id_of(value)
        raise UsageError(
            f"that is an API key (key id {key_id}), not a token id: revoke it with `tenantry apikey revoke {key_id}`"
        )
    if len(value) == 16 and all(c in string.hexdigits for c in value):
        record = store.get_api_key(value.lower())
        if record is not None:
            raise UsageError(
                f"{value} is the id of an API key of tenant {record.tenant_id!r}, not a token id: "
                f"revoke the key with `tenantry apikey revoke {record.key_id}`"
            )


def find_issued_token(store: AuditStore, jti: str, *, tenant_id: str | None = None) -> IssuedTokenRecord | None:
    """The ``token_issued`` record naming ``jti`` (in one tenant's stream, or in any), or ``None``.

    :raises AuditUnavailable: when the audit store cannot be read.
    """
    # Canonical JSON escapes a string exactly as json.dumps(ensure_ascii=False) does: a byte
    # search finds the candidates without parsing every record.
    needle = b'"jti":' + json.dumps(jti, ensure_ascii=False).encode()
    streams = [tenant_id] if tenant_id is not None else store.streams()
    for stream in streams:
        for stored in store.read(stream):
            if needle not in stored.record or b'"token_issued"' not in stored.record:
                continue
            fields = json.loads(stored.record)
            detail = fields.get("detail") or {}
            if fields.get("event_type") != "token_issued" or detail.get("jti") != jti:
                continue
            expires_at = detail.get("expires_at")
            return IssuedTokenRecord(
                jti=jti,
                tenant_id=str(fields.get("tenant_id")),
                subject=fields.get("subject"),
                issued_at=str(fields.get("timestamp")),
                expires_at=expires_at if isinstance(expires_at, int) else None,
            )
    return None
