"""Signing keys of the built-in issuer, kept in the data dir and published as JWKS.

The key file (``keys/signing-keys.json``, mode 0600, directory 0700) holds every key that
may still verify a token. Exactly one key is ``current`` and signs new tokens; a
``previous`` key only verifies tokens it signed before a rotation, until it is retired.
The server re-reads the file when it changes, so a CLI rotation reaches it within a second.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from joserfc.jwk import ECKey, OKPKey

from tenantry.core.errors import NotFound, StorageError, UsageError

__all__ = [
    "SigningKey",
    "KeyRing",
    "KeyStatus",
    "SigningAlg",
    "generate_signing_key",
    "load_or_create_secret",
    "load_or_create_token",
]

KeyStatus = Literal["current", "previous", "retired"]
SigningAlg = Literal["EdDSA", "ES256"]
_KEY_FILE = "signing-keys.json"
_RELOAD_INTERVAL = 0.25


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    alg: SigningAlg
    status: KeyStatus
    created_at: int
    key: OKPKey | ECKey
    retire_after: int | None = None

    def state(self, now: float) -> KeyStatus:
        """The status in force at ``now``: a previous key past its ``retire_after`` is retired."""
        if self.status == "previous" and self.retire_after is not None and now >= self.retire_after:
            return "retired"
        return self.status

    def public_jwk(self) -> dict[str, Any]:
        jwk = dict(self.key.as_dict(private=False))
        jwk.update({"kid": self.kid, "alg": self.alg, "use": "sig"})
        return jwk

    def to_record(self) -> dict[str, Any]:
        return {
            "kid": self.kid,
            "alg": self.alg,
            "status": self.status,
            "created_at": self.created_at,
            "retire_after": self.retire_after,
            "jwk": self.key.as_dict(private=True),
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> SigningKey:
        alg: SigningAlg = record["alg"]
        key: OKPKey | ECKey
        key = OKPKey.import_key(record["jwk"]) if alg == "EdDSA" else ECKey.import_key(record["jwk"])
        return cls(
            kid=record["kid"],
            alg=alg,
            status=record["status"],
            created_at=int(record["created_at"]),
            key=key,
            retire_after=record.get("retire_after"),
        )


def generate_signing_key(alg: SigningAlg, *, now: int | None = None) -> SigningKey:
    """A fresh key whose ``kid`` is its RFC 7638 thumbprint."""
    key: OKPKey | ECKey
    key = OKPKey.generate_key("Ed25519", private=True) if alg == "EdDSA" else ECKey.generate_key("P-256", private=True)
    return SigningKey(
        kid=key.thumbprint(),
        alg=alg,
        status="current",
        created_at=int(now if now is not None else time.time()),
        key=key,
    )


class KeyRing:
    """The signing keys in ``<data_dir>/keys``; safe to share between threads.

    :param key_dir: directory holding the key file; created with mode 0700.
    :param alg: algorithm for a key generated when none exists.
    """

    def __init__(self, key_dir: Path, alg: SigningAlg = "EdDSA", *, file_name: str = _KEY_FILE) -> None:
        self._dir = key_dir
        self._path = key_dir / file_name
        self._alg: SigningAlg = alg
        self._lock = threading.Lock()
        self._keys: dict[str, SigningKey] = {}
        self._stamp: tuple[int, int] | None = None
        self._checked_at = 0.0
        self.version = 0
        """Bumped whenever the key set changes; verifier caches key on it."""

    @property
    def path(self) -> Path:
        return self._path

    def ensure(self) -> None:
        """Load the keys, generating the first one (mode 0600) if there is none.

        :raises StorageError: when the key directory cannot be created or read.
        """
        try:
            self._dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            with self._file_lock():
                if not self._path.exists():
                    self._write([generate_signing_key(self._alg)])
        except OSError as exc:
            raise StorageError(f"cannot prepare signing keys in {self._dir}: {exc.strerror}") from None
        self._reload(force=True)

    def current_version(self) -> int:
        """:attr:`version`, after re-reading the key file if it may have changed (at most once a second)."""
        self._reload()
        return self.version

    def current(self) -> SigningKey:
        self._reload()
        for key in self._keys.values():
            if key.status == "current":
                return key
        raise StorageError("no current signing key; run `tenantry keys rotate`")

    def get(self, kid: str, *, include_retired: bool = False) -> SigningKey | None:
        """The key with this id if it may still verify tokens (current or previous).

        :param include_retired: also return retired keys (old audit checkpoints stay verifiable).
        """
        self._reload()
        key = self._keys.get(kid)
        if key is None or (not include_retired and key.state(time.time()) == "retired"):
            return None
        return key

    def all(self) -> list[SigningKey]:
        self._reload()
        return sorted(self._keys.values(), key=lambda k: k.created_at)

    def jwks(self) -> dict[str, Any]:
        """The public JSON Web Key Set: every key that may still verify a token."""
        now = time.time()
        return {"keys": [k.public_jwk() for k in self.all() if k.state(now) != "retired"]}

    def replace(self, keys: list[SigningKey]) -> None:
        """Persist a new key list atomically (used by rotation and retirement)."""
        with self._file_lock():
            self._write(keys)
        self._reload(force=True)

    def rotate(self, *, overlap: int, retire_old_now: bool = False, now: int | None = None) -> SigningKey:
        """Add a new current key; the old current key becomes ``previous`` and verifies the tokens
        it signed for ``overlap`` more seconds (the longest token lifetime plus clock leeway), then
        retires by itself. ``retire_old_now`` (a compromised key) retires every older key at once,
        the old current one and any previous one still in its overlap: only the new key verifies.

        :raises StorageError: when the key file cannot be written.
        """
        at = int(time.time()) if now is None else now
        self.ensure()
        with self._file_lock():
            self._reload(force=True)
            fresh = generate_signing_key(self._alg, now=at)
            kept: list[SigningKey] = []
            for key in self._keys.values():
                if retire_old_now and key.status != "retired":
                    key = replace(key, status="retired", retire_after=min(at, key.retire_after or at))
                elif key.status == "current":
                    key = replace(key, status="previous", retire_after=at + overlap)
                elif key.state(at) == "retired" and key.status != "retired":
                    key = replace(key, status="retired")
                kept.append(key)
            self._write([*kept, fresh])
        self._reload(force=True)
        return fresh

    def retire(self, kid: str, *, now: int | None = None) -> tuple[SigningKey, bool]:
        """Retire one previous key at once (its tokens are refused from now on).

        Returns the key as stored and whether this call retired it (``False``: it already was).

        :raises NotFound: no key has this id. :raises UsageError: it is the current key
            (rotate first). :raises StorageError: when the key file cannot be written.
        """
        at = int(time.time()) if now is None else now
        self.ensure()
        with self._file_lock():
            self._reload(force=True)
            key = self._keys.get(kid)
            if key is None:
                raise NotFound(f"no signing key {kid!r} (see `tenantry keys list`)")
            if key.status == "current":
                raise UsageError(
                    f"key {kid} is the current signing key; `tenantry keys rotate` replaces it "
                    "(`--retire-old-now` retires it at once)"
                )
            if key.status == "retired":
                return key, False
            retired = replace(key, status="retired", retire_after=min(at, key.retire_after or at))
            self._write([retired if k.kid == kid else k for k in self._keys.values()])
        self._reload(force=True)
        return retired, True

    def retire_expired(self, now: float | None = None) -> list[SigningKey]:
        """Persist the retirement of previous keys whose overlap has passed; returns them."""
        at = time.time() if now is None else now
        if not any(k.status == "previous" and k.state(at) == "retired" for k in self.all()):
            return []
        with self._file_lock():
            self._reload(force=True)
            retired = [k for k in self._keys.values() if k.status == "previous" and k.state(at) == "retired"]
            self._write([replace(k, status="retired") if k in retired else k for k in self._keys.values()])
        self._reload(force=True)
        return retired

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        lock_path = self._dir / f".{self._path.stem}.lock"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _write(self, keys: list[SigningKey]) -> None:
        tmp = self._path.with_suffix(".tmp")
        data = json.dumps({"keys": [k.to_record() for k in keys]}, indent=2).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        tmp.replace(self._path)

    def _reload(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._checked_at < _RELOAD_INTERVAL:
            return
        with self._lock:
            self._checked_at = now
            try:
                stat = self._path.stat()
            except FileNotFoundError:
                raise StorageError(
                    f"signing keys missing at {self._path}; start the server once to create them"
                ) from None
            stamp = (stat.st_mtime_ns, stat.st_size)
            if stamp == self._stamp and not force:
                return
            if stat.st_mode & 0o077:
                raise StorageError(f"signing key file {self._path} must not be readable by group or others (chmod 600)")
            try:
                records = json.loads(self._path.read_bytes())["keys"]
                keys = {r["kid"]: SigningKey.from_record(r) for r in records}
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise StorageError(f"signing key file {self._path} is unreadable: {exc}") from None
            self._keys = keys
            self._stamp = stamp
            self.version += 1


def load_or_create_secret(path: Path, *, size: int = 32) -> bytes:
    """A random secret kept in ``path`` (mode 0600), created on first use; shared by every
    process on the data dir (e.g. the key sealing multi-round-trip ``requestState``).

    :raises StorageError: when the file cannot be created or read, or is group/world readable.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            try:
                os.write(fd, os.urandom(size))
                os.fsync(fd)
            finally:
                os.close(fd)
        if path.stat().st_mode & 0o077:
            raise StorageError(f"secret file {path} must not be readable by group or others (chmod 600)")
        secret = path.read_bytes()
    except OSError as exc:
        raise StorageError(f"cannot read or create {path}: {exc.strerror}") from None
    if len(secret) != size:
        raise StorageError(f"secret file {path} is corrupt (expected {size} bytes)")
    return secret


def load_or_create_token(path: Path) -> str:
    """A random bearer token kept as text in ``path`` (mode 0600), created on first use (e.g. the
    ``/metrics`` token, which Prometheus reads with ``credentials_file``).

    :raises StorageError: when the file cannot be created or read, or is group/world readable.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            try:
                os.write(fd, secrets.token_urlsafe(32).encode() + b"\n")
                os.fsync(fd)
            finally:
                os.close(fd)
        if path.stat().st_mode & 0o077:
            raise StorageError(f"token file {path} must not be readable by group or others (chmod 600)")
        token = path.read_text().strip()
    except OSError as exc:
        raise StorageError(f"cannot read or create {path}: {exc.strerror}") from None
    if len(token) < 16:
        raise StorageError(f"token file {path} is corrupt (too short)")
    return token
