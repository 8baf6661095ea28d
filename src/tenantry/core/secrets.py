"""Per-tenant secrets as the control plane stores them: sealed bytes and wrapped data keys.

Plain values and the storage contract only; the cryptography lives in
:mod:`tenantry.scoping.secrets.envelope`. Shared here because both the control plane
(which stores them) and the secret scopes (which seal and open them) need them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from tenantry.core.errors import UsageError

__all__ = [
    "SECRET_NAME_PATTERN",
    "MAX_SECRET_BYTES",
    "MIN_SECRET_CHARS",
    "SecretInfo",
    "WrappedKey",
    "SecretStore",
    "validate_secret_name",
    "validate_secret_value",
]

SECRET_NAME_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")
MAX_SECRET_BYTES = 64 * 1024
MIN_SECRET_CHARS = 4
"""Shorter values cannot be redacted from tool results without mangling ordinary text."""


@dataclass(frozen=True, slots=True)
class SecretInfo:
    """What may be shown about a secret: its name and dates, never its value."""

    name: str
    created_at: int
    updated_at: int


@dataclass(frozen=True, slots=True)
class WrappedKey:
    """A tenant's data key, encrypted under the master key whose id is ``key_id``."""

    key_id: str
    wrapped: bytes
    created_at: int

    def __repr__(self) -> str:
        return f"WrappedKey(key_id={self.key_id!r}, created_at={self.created_at})"


class SecretStore(Protocol):
    """Sealed secrets and wrapped data keys, per tenant. The store never sees a plaintext.

    Writes (:meth:`put_secret`, :meth:`put_data_key`) raise
    :class:`~tenantry.core.errors.NotFound` for an unknown tenant; reads and deletes treat an
    unknown tenant as one without secrets. Every method raises
    :class:`~tenantry.core.errors.StorageError` when the store fails.
    """

    def put_secret(self, tenant_id: str, name: str, sealed: bytes, now: int) -> bool:
        """Insert or replace the sealed value of ``name``; ``True`` when it was new."""
        ...

    def get_secret(self, tenant_id: str, name: str) -> bytes | None: ...

    def sealed_secrets(self, tenant_id: str) -> dict[str, bytes]:
        """Every sealed value of the tenant by name (one read, for redaction)."""
        ...

    def list_secrets(self, tenant_id: str) -> list[SecretInfo]:
        """Names and dates, ordered by name."""
        ...

    def delete_secret(self, tenant_id: str, name: str) -> bool:
        """``True`` when there was such a secret."""
        ...

    def get_data_key(self, tenant_id: str) -> WrappedKey | None: ...

    def put_data_key(self, tenant_id: str, key: WrappedKey) -> WrappedKey:
        """Store ``key`` unless the tenant already has a data key; returns the one stored.

        Two concurrent first writers both get the same (winning) key back.
        """
        ...

    def delete_data_key(self, tenant_id: str) -> bool:
        """Delete the tenant's data key and with it every sealed secret (crypto-shredding);
        ``True`` when there was a key."""
        ...


def validate_secret_name(name: str) -> str:
    """Return ``name`` if it is a valid secret name.

    :raises UsageError: when it is not (a letter, then up to 63 letters, digits, ``_``, ``.`` or ``-``).
    """
    if not isinstance(name, str) or SECRET_NAME_PATTERN.fullmatch(name) is None:
        raise UsageError("secret name must be a letter followed by up to 63 letters, digits, '_', '.' or '-'")
    return name


def validate_secret_value(value: str) -> bytes:
    """The UTF-8 bytes of ``value`` if it may be stored. Messages never quote the value.

    :raises UsageError: for an empty, too short (redaction needs at least
        :data:`MIN_SECRET_CHARS` characters), too long or non-UTF-8 value.
    """
    if not isinstance(value, str) or not value:
        raise UsageError("the secret value is empty")
    if len(value) < MIN_SECRET_CHARS:
        raise UsageError(
            f"the secret value must be at least {MIN_SECRET_CHARS} characters"
            " (shorter values cannot be reliably redacted from tool results)"
        )
    try:
        encoded = value.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError("the secret value is not valid UTF-8") from None
    if len(encoded) > MAX_SECRET_BYTES:
        raise UsageError(f"the secret value exceeds {MAX_SECRET_BYTES // 1024} KiB")
    return encoded
