"""Tenant API keys: long-lived secrets whose prefix names their tenant.

A key looks like ``tnty_<tenant>_<key id>_<secret>``: ``tnty_acme_5f0c9e2ab17d4c33_Xk3...``.
Only a salted SHA-256 of the secret part is stored. The secret carries 256 bits of entropy
from the OS's CSPRNG, so a slow password hash would buy nothing against guessing while
costing CPU on every request that uses the key directly; what stays secret is the key, not
a human-chosen password. The key id is public (listed, audited, used to revoke).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import anyio.to_thread

from tenantry.core.credentials import ApiKeyRecord
from tenantry.core.errors import InvalidCredential, UsageError
from tenantry.core.identity import Principal
from tenantry.core.ids import TENANT_ID_PATTERN, validate_tenant_id, validate_tool_name

__all__ = [
    "API_KEY_PREFIX",
    "API_KEY_ISSUER",
    "IssuedApiKey",
    "ParsedApiKey",
    "generate_api_key",
    "looks_like_api_key",
    "parse_api_key",
    "ApiKeyVerifier",
    "api_key_subject",
    "key_id_of",
]

API_KEY_PREFIX = "tnty_"
API_KEY_ISSUER = "tenantry:api-key"
"""The issuer of principals authenticated by an API key used directly as a bearer credential."""
_SECRET_ALPHABET = string.ascii_letters + string.digits
_SECRET_LENGTH = 43  # 43 * log2(62) > 256 bits
_KEY_ID_BYTES = 8
_NO_EXPIRY = 253402300799  # 9999-12-31T23:59:59Z
_MAX_KEY_LENGTH = 200


def api_key_subject(key_id: str) -> str:
    """The subject of every principal acting with this key (directly or through an exchanged token)."""
    return f"api-key:{key_id}"


@dataclass(frozen=True, slots=True)
class ParsedApiKey:
    tenant_id: str
    key_id: str
    secret: str


@dataclass(frozen=True, slots=True)
class IssuedApiKey:
    key: str
    """The full key: shown once, never stored."""
    record: ApiKeyRecord


def _hash(salt: bytes, secret: str) -> bytes:
    return hashlib.sha256(salt + secret.encode("ascii")).digest()


def generate_api_key(
    tenant_id: str,
    tools: Iterable[str],
    *,
    name: str | None = None,
    expires_at: int | None = None,
    created_by: str | None = None,
    now: int | None = None,
) -> IssuedApiKey:
    """A new key and the record to store for it.

    :raises UsageError: for an invalid tenant id or tool name.
    """
    validate_tenant_id(tenant_id)
    tool_set = frozenset(validate_tool_name(t) for t in tools)
    key_id = secrets.token_hex(_KEY_ID_BYTES)
    secret = "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(_SECRET_LENGTH))
    salt = secrets.token_bytes(16)
    record = ApiKeyRecord(
        key_id=key_id,
        tenant_id=tenant_id,
        name=name or key_id,
        tools=tool_set,
        salt=salt,
        secret_hash=_hash(salt, secret),
        created_at=int(time.time()) if now is None else now,
        expires_at=expires_at,
        created_by=created_by,
    )
    return IssuedApiKey(key=f"{API_KEY_PREFIX}{tenant_id}_{key_id}_{secret}", record=record)


def looks_like_api_key(credential: str) -> bool:
    return credential.startswith(API_KEY_PREFIX)


def parse_api_key(credential: str) -> ParsedApiKey:
    """Split a key into its parts (nothing is verified).

    :raises InvalidCredential: when it is not shaped like a Tenantry API key.
    """
    if len(credential) > _MAX_KEY_LENGTH or not credential.startswith(API_KEY_PREFIX):
        raise InvalidCredential("malformed API key")
    parts = credential[len(API_KEY_PREFIX) :].split("_")
    if len(parts) != 3:
        raise InvalidCredential("malformed API key")
    tenant_id, key_id, secret = parts
    if (
        TENANT_ID_PATTERN.fullmatch(tenant_id) is None
        or len(key_id) != 2 * _KEY_ID_BYTES
        or not all(c in string.hexdigits for c in key_id)
        or len(secret) != _SECRET_LENGTH
        or not all(c in _SECRET_ALPHABET for c in secret)
    ):
        raise InvalidCredential("malformed API key")
    return ParsedApiKey(tenant_id=tenant_id, key_id=key_id, secret=secret)


def key_id_of(value: str) -> str:
    """The key id named on the command line: a bare id, or a full key (whose secret is ignored).

    :raises UsageError: when it is neither.
    """
    if looks_like_api_key(value):
        try:
            return parse_api_key(value).key_id
        except InvalidCredential:
            raise UsageError("not a Tenantry API key or key id") from None
    if len(value) == 2 * _KEY_ID_BYTES and all(c in string.hexdigits for c in value):
        return value.lower()
    raise UsageError("not a Tenantry API key or key id")


class ApiKeyVerifier:
    """Verifies a key against the stored record found by ``lookup`` (the control-plane view).

    A key the view does not hold yet (created a moment ago) is looked up once in the store
    through ``fallback``, in a worker thread; failed attempts are rate-limited by the caller.
    Every failure before the secret is proven says the same thing, so the answer never tells
    whether a key id exists; only the holder of the right secret learns that the key is
    revoked or expired.
    """

    def __init__(
        self,
        lookup: Callable[[str], ApiKeyRecord | None],
        fallback: Callable[[str], ApiKeyRecord | None] | None = None,
    ) -> None:
        self._lookup = lookup
        self._fallback = fallback

    async def authenticate(self, credential: str, *, now: float | None = None) -> ApiKeyRecord:
        """The stored record of a valid, active key.

        :raises InvalidCredential: malformed, unknown, wrong secret, revoked or expired.
        """
        parsed = parse_api_key(credential)
        record = self._lookup(parsed.key_id)
        if record is None and self._fallback is not None:
            fallback = self._fallback
            record = await anyio.to_thread.run_sync(lambda: fallback(parsed.key_id))
        return self.check(parsed, record, time.time() if now is None else now)

    @staticmethod
    def check(parsed: ParsedApiKey, record: ApiKeyRecord | None, now: float) -> ApiKeyRecord:
        """:raises InvalidCredential: unless ``record`` is the valid, active record of ``parsed``."""
        if record is None or record.tenant_id != parsed.tenant_id:
            _hash(b"\0" * 16, parsed.secret)  # same work whether or not the id exists
            raise InvalidCredential("API key not valid")
        if not hmac.compare_digest(_hash(record.salt, parsed.secret), record.secret_hash):
            raise InvalidCredential("API key not valid")
        if not record.active:
            raise InvalidCredential("API key revoked")
        if record.expired(now):
            raise InvalidCredential("API key expired")
        return record

    async def verify(self, credential: str) -> Principal:
        record = await self.authenticate(credential)
        return Principal(
            issuer=API_KEY_ISSUER,
            tenant_id=record.tenant_id,
            subject=api_key_subject(record.key_id),
            allowed_tools=record.tools,
            token_id=record.key_id,
            expires_at=record.expires_at or _NO_EXPIRY,
            issued_at=record.created_at,
            credential_kind="api_key",
        )
