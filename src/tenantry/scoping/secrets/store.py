"""Secret scopes over the control plane's :class:`~tenantry.core.secrets.SecretStore`.

Values are decrypted at call time, in a worker thread. Unwrapped data keys are cached in
memory for ``cache_ttl`` seconds (60 by default) per tenant, so a hot tool does not unwrap
on every call. :meth:`StoredSecretScopes.shred_tenant_key` drops the cached key at once in
this process; another process sharing the store may keep its cached key up to the TTL, but
a shred also deletes the sealed values, so nothing is left for it to open. A cached key
that no longer opens a value (the data key was replaced elsewhere) is dropped and re-read.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tenantry.core.errors import NotFound, SecretsUnavailable
from tenantry.core.ids import validate_tenant_id
from tenantry.core.secrets import SecretInfo, SecretStore, validate_secret_name, validate_secret_value
from tenantry.core.settings import SecretSettings
from tenantry.scoping.secrets.envelope import DataKey, MasterKey, load_master_key
from tenantry.scoping.threads import ThreadBulkheads, default_bulkheads

__all__ = ["StoredSecretScopes", "StoredSecretHandle", "open_secret_scopes"]

logger = logging.getLogger(__name__)

_SHREDDED = "this tenant's secrets cannot be decrypted: its data key was deleted (crypto-shredded)"


class StoredSecretScopes:
    """Implements :class:`~tenantry.scoping.secrets.base.SecretScopes`, plus the blocking
    write side used by the admin actions (``set_secret``, ``delete_secret``, ``shred_tenant_key``).

    :param store: where sealed values and wrapped data keys live (the control store).
    :param master_key: wraps and unwraps the tenants' data keys.
    :param cache_ttl: seconds an unwrapped data key is reused; 0 disables the cache.
    """

    def __init__(
        self,
        store: SecretStore,
        master_key: MasterKey,
        *,
        cache_ttl: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        bulkheads: ThreadBulkheads | None = None,
    ) -> None:
        self.bulkheads = bulkheads or default_bulkheads()
        self._store = store
        self._master = master_key
        self._ttl = cache_ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, DataKey]] = {}

    @property
    def master_key_id(self) -> str:
        return self._master.key_id

    def for_tenant(self, tenant_id: str) -> StoredSecretHandle:
        return StoredSecretHandle(self, validate_tenant_id(tenant_id))

    async def values_of(self, tenant_id: str) -> list[str]:
        """Every current value of the tenant's secrets, longest first (so a redactor replaces a
        value before any shorter value inside it). For redaction only, never for display.

        :raises SecretsUnavailable: a stored value cannot be decrypted; the caller must then
            withhold the result it meant to redact (fail closed).
        """
        return await self.bulkheads.run(lambda: self.read_values(tenant_id), tenant_id=tenant_id)

    # -- blocking API (worker threads, the CLI) ------------------------------------------------

    def read_secret(self, tenant_id: str, name: str) -> str:
        """The plaintext of one secret.

        :raises NotFound: no secret of that name (the same whether the tenant has none at all).
        :raises UsageError: an invalid name. :raises SecretsUnavailable: it cannot be decrypted.
        """
        validate_secret_name(name)
        sealed = self._store.get_secret(tenant_id, name)
        if sealed is None:
            raise NotFound(f"no secret named {name!r}")
        return self._open(tenant_id, {name: sealed})[name]

    def read_values(self, tenant_id: str) -> list[str]:
        """Blocking form of :meth:`values_of`."""
        sealed = self._store.sealed_secrets(tenant_id)
        if not sealed:
            return []
        return sorted(self._open(tenant_id, sealed).values(), key=len, reverse=True)

    def list_names(self, tenant_id: str) -> list[str]:
        return [info.name for info in self._store.list_secrets(tenant_id)]

    def list_secrets(self, tenant_id: str) -> list[SecretInfo]:
        return self._store.list_secrets(tenant_id)

    def set_secret(self, tenant_id: str, name: str, value: str, *, now: int | None = None) -> bool:
        """Seal and store ``value`` under ``name``, creating the tenant's data key on its first
        secret. Returns ``True`` when the name was new.

        :raises UsageError: an invalid name or value (the message never quotes the value).
        :raises NotFound: unknown tenant. :raises SecretsUnavailable: the data key cannot be unwrapped.
        """
        validate_secret_name(name)
        plaintext = validate_secret_value(value)
        at = int(time.time()) if now is None else now
        # Always the stored key, never a cached one: a value sealed under a key replaced
        # elsewhere would be unreadable.
        key = self._data_key(tenant_id, create=True, now=at)
        assert key is not None
        return self._store.put_secret(tenant_id, name, key.seal(tenant_id, name, plaintext), at)

    def delete_secret(self, tenant_id: str, name: str) -> bool:
        """``True`` when the secret existed. :raises UsageError: an invalid name."""
        validate_secret_name(name)
        return self._store.delete_secret(tenant_id, name)

    def shred_tenant_key(self, tenant_id: str) -> bool:
        """Delete the tenant's data key and sealed values, so any copy of the sealed values kept
        without that key (an export, a stale replica) cannot be decrypted. A database backup
        holding both the wrapped key and the values stays readable with the master key.
        ``True`` when there was a key."""
        try:
            return self._store.delete_data_key(tenant_id)
        finally:
            self._forget(tenant_id)

    def release_tenant(self, tenant_id: str) -> None:
        """Drop the tenant's cached data key."""
        self._forget(tenant_id)

    # -- internals ------------------------------------------------------------------------------

    def _open(self, tenant_id: str, sealed: dict[str, bytes]) -> dict[str, str]:
        key = self._cached(tenant_id)
        if key is not None:
            try:
                return _open_all(key, tenant_id, sealed)
            except SecretsUnavailable:
                self._forget(tenant_id)  # the data key may have been replaced by another process
        key = self._data_key(tenant_id, create=False)
        if key is None:
            raise SecretsUnavailable(_SHREDDED)
        try:
            return _open_all(key, tenant_id, sealed)
        except SecretsUnavailable as exc:
            logger.warning("a secret cannot be decrypted", extra={"tenant_id": tenant_id, "code": exc.code})
            raise

    def _data_key(self, tenant_id: str, *, create: bool, now: int | None = None) -> DataKey | None:
        """The tenant's data key as stored now (the cache is only written here, never read)."""
        wrapped = self._store.get_data_key(tenant_id)
        if wrapped is None:
            self._forget(tenant_id)
            if not create:
                return None
            key, fresh = self._master.new_data_key(tenant_id, now=int(time.time()) if now is None else now)
            stored = self._store.put_data_key(tenant_id, fresh)
            if stored.wrapped != fresh.wrapped:  # a concurrent first writer won: use its key
                key = self._master.unwrap(tenant_id, stored)
        else:
            key = self._master.unwrap(tenant_id, wrapped)
        self._remember(tenant_id, key)
        return key

    def _cached(self, tenant_id: str) -> DataKey | None:
        with self._lock:
            entry = self._cache.get(tenant_id)
            if entry is None:
                return None
            if entry[0] <= self._clock():
                del self._cache[tenant_id]
                return None
            return entry[1]

    def _remember(self, tenant_id: str, key: DataKey) -> None:
        if self._ttl <= 0:
            return
        with self._lock:
            self._cache[tenant_id] = (self._clock() + self._ttl, key)

    def _forget(self, tenant_id: str) -> None:
        with self._lock:
            self._cache.pop(tenant_id, None)

    def __repr__(self) -> str:
        return f"StoredSecretScopes(master_key_id={self._master.key_id!r})"


def _open_all(key: DataKey, tenant_id: str, sealed: dict[str, bytes]) -> dict[str, str]:
    return {name: key.open(tenant_id, name, blob).decode("utf-8") for name, blob in sealed.items()}


class StoredSecretHandle:
    """One tenant's secrets (``ctx.secrets``): read-only, decrypted on each call."""

    __slots__ = ("_scopes", "tenant_id")

    def __init__(self, scopes: StoredSecretScopes, tenant_id: str) -> None:
        self._scopes = scopes
        self.tenant_id = tenant_id

    async def get(self, name: str) -> str:
        """The value of secret ``name``. Never log it or return it to the agent.

        :raises NotFound: no secret of that name. :raises SecretsUnavailable: it cannot be decrypted.
        """
        scopes, tenant_id = self._scopes, self.tenant_id
        return await scopes.bulkheads.run(lambda: scopes.read_secret(tenant_id, name), tenant_id=tenant_id)

    async def names(self) -> list[str]:
        scopes, tenant_id = self._scopes, self.tenant_id
        return await scopes.bulkheads.run(lambda: scopes.list_names(tenant_id), tenant_id=tenant_id)

    def __repr__(self) -> str:
        return f"StoredSecretHandle(tenant_id={self.tenant_id!r})"


def open_secret_scopes(
    settings: SecretSettings,
    data_dir: Path,
    store: SecretStore,
    *,
    cache_ttl: float = 60.0,
    bulkheads: ThreadBulkheads | None = None,
) -> StoredSecretScopes:
    """The deployment's secret scopes: the master key from ``settings`` or the data dir (created
    on first use), sealed values in ``store``.

    :raises UsageError: a malformed ``secrets.master_key``. :raises StorageError: the key file
        cannot be created or read.
    """
    return StoredSecretScopes(store, load_master_key(settings, data_dir), cache_ttl=cache_ttl, bulkheads=bulkheads)
