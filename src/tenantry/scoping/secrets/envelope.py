"""Envelope encryption of tenant secrets: AES-256-GCM under a per-tenant data key, which is
itself stored wrapped (AES-256-GCM) under the deployment's master key.

* Master key: 32 bytes from ``secrets.master_key`` (base64) or ``<data_dir>/keys/master.key``
  (mode 0600, created on first use). Its ``key_id`` (the first 16 hex digits of its SHA-256)
  is stored beside every wrapped data key, so a wrong master key is named as such.
* Data key: 32 random bytes per tenant, wrapped with AAD ``b"tenantry-dek\\0" + tenant_id``.
* Secret: ``nonce (12 bytes) || ciphertext+tag``, sealed with AAD
  ``b"tenantry-secret\\0" + tenant_id + b"\\0" + name``: a sealed value moved to another
  tenant or another name does not open.

Every nonce is random (96 bits); a data key seals at most a few thousand values in its life,
far below the 2**32 messages random GCM nonces allow. No object here shows key material or
plaintext in its ``repr``, and no error message carries either.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tenantry.core.errors import SecretsUnavailable, StorageError, UsageError
from tenantry.core.secrets import WrappedKey
from tenantry.core.settings import SecretSettings

__all__ = [
    "KEY_BYTES",
    "NONCE_BYTES",
    "MasterKey",
    "DataKey",
    "load_master_key",
    "master_key_path",
]

KEY_BYTES = 32
NONCE_BYTES = 12
_TAG_BYTES = 16
_DEK_AAD = b"tenantry-dek\0"
_SECRET_AAD = b"tenantry-secret\0"


def _dek_aad(tenant_id: str) -> bytes:
    return _DEK_AAD + tenant_id.encode()


def _secret_aad(tenant_id: str, name: str) -> bytes:
    # Neither tenant ids nor secret names can contain NUL, so the encoding is unambiguous.
    return _SECRET_AAD + tenant_id.encode() + b"\0" + name.encode()


class DataKey:
    """One tenant's unwrapped data key: seals and opens that tenant's secret values."""

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError("a data key is 32 bytes")
        self._aead = AESGCM(key)

    def seal(self, tenant_id: str, name: str, plaintext: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext, _secret_aad(tenant_id, name))

    def open(self, tenant_id: str, name: str, sealed: bytes) -> bytes:
        """:raises SecretsUnavailable: the value was tampered with, moved from another tenant or
        name, or sealed under another data key (one that was shredded)."""
        if len(sealed) < NONCE_BYTES + _TAG_BYTES:
            raise SecretsUnavailable(f"secret {name!r} is corrupt and cannot be decrypted")
        try:
            return self._aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], _secret_aad(tenant_id, name))
        except InvalidTag:
            raise SecretsUnavailable(
                f"secret {name!r} cannot be decrypted: it was altered, or sealed under a data key that no longer exists"
            ) from None

    def __repr__(self) -> str:
        return "DataKey(<hidden>)"


class MasterKey:
    """The deployment's key-encryption key. It only wraps and unwraps tenant data keys."""

    __slots__ = ("_aead", "key_id")

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise UsageError("the master key must be 32 bytes")
        self._aead = AESGCM(key)
        self.key_id = hashlib.sha256(key).hexdigest()[:16]

    @classmethod
    def from_base64(cls, text: str) -> MasterKey:
        """:raises UsageError: unless ``text`` is base64 (standard or URL-safe) of 32 bytes."""
        cleaned = text.strip()
        try:
            key = base64.b64decode(cleaned.replace("-", "+").replace("_", "/"), validate=True)
        except (binascii.Error, ValueError):
            raise UsageError("secrets.master_key must be base64 of 32 random bytes") from None
        if len(key) != KEY_BYTES:
            raise UsageError("secrets.master_key must be base64 of 32 random bytes")
        return cls(key)

    def new_data_key(self, tenant_id: str, *, now: int) -> tuple[DataKey, WrappedKey]:
        """A fresh random data key for the tenant, and its wrapped form to store."""
        key = os.urandom(KEY_BYTES)
        return DataKey(key), self.wrap(tenant_id, key, now=now)

    def wrap(self, tenant_id: str, data_key: bytes, *, now: int) -> WrappedKey:
        nonce = os.urandom(NONCE_BYTES)
        wrapped = nonce + self._aead.encrypt(nonce, data_key, _dek_aad(tenant_id))
        return WrappedKey(key_id=self.key_id, wrapped=wrapped, created_at=now)

    def unwrap(self, tenant_id: str, key: WrappedKey) -> DataKey:
        """:raises SecretsUnavailable: the key was wrapped under another master key, or the
        wrapped key was altered or belongs to another tenant."""
        if key.key_id != self.key_id:
            raise SecretsUnavailable(
                "the configured master key does not match the one that encrypted this tenant's secrets"
                f" (master key id {self.key_id}, data key wrapped under {key.key_id});"
                " restore the original secrets.master_key or keys/master.key"
            )
        blob = key.wrapped
        try:
            plain = self._aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], _dek_aad(tenant_id))
        except (InvalidTag, ValueError):
            raise SecretsUnavailable("this tenant's data key is corrupt or belongs to another tenant") from None
        try:
            return DataKey(plain)
        except ValueError:
            raise SecretsUnavailable("this tenant's data key is corrupt") from None

    def __repr__(self) -> str:
        return f"MasterKey(key_id={self.key_id!r})"


def master_key_path(data_dir: Path) -> Path:
    return data_dir / "keys" / "master.key"


def load_master_key(settings: SecretSettings, data_dir: Path) -> MasterKey:
    """The master key from ``settings.master_key``, else from ``<data_dir>/keys/master.key``
    (32 raw bytes, mode 0600; created on first use).

    Replicas sharing one control-plane database must share one master key: set
    ``secrets.master_key`` on all of them (a replica with a different key gets
    :class:`SecretsUnavailable` naming the mismatch, never a wrong plaintext).

    :raises UsageError: a configured key that is not base64 of 32 bytes.
    :raises StorageError: the key file cannot be created or read, is readable by group or
        others, or does not hold 32 bytes.
    """
    if settings.master_key is not None:
        return MasterKey.from_base64(settings.master_key.get_secret_value())
    return MasterKey(_load_or_create_key_file(master_key_path(data_dir)))


def _load_or_create_key_file(path: Path) -> bytes:
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not path.exists():
            _create_key_file(path)
        if path.stat().st_mode & 0o077:
            raise StorageError(f"master key file {path} must not be readable by group or others (chmod 600)")
        key = path.read_bytes()
    except OSError as exc:
        raise StorageError(f"cannot read or create the master key {path}: {exc.strerror}") from None
    if len(key) != KEY_BYTES:
        raise StorageError(f"master key file {path} is corrupt (expected {KEY_BYTES} bytes)")
    return key


def _create_key_file(path: Path) -> None:
    # Written in full to a private temporary file, then linked into place: a concurrent
    # process either wins the link or reads the winner's complete key, never a partial one.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            os.write(fd, os.urandom(KEY_BYTES))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)  # losing the master key loses every secret: make its name durable too
        finally:
            os.close(dir_fd)
    finally:
        tmp.unlink(missing_ok=True)
