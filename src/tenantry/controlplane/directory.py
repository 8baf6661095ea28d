"""An in-memory view of the control plane for the request path, kept fresh by polling.

Lookups on the hot path never touch the database; a background loop re-reads the store
whenever its revision moves, so a CLI ``grant``, ``halt``, ``token revoke`` or ``apikey
revoke`` reaches a running server within one poll interval (250 ms by default). A process
that makes such a change itself can apply it at once with :meth:`TenantDirectory.refresh`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import anyio
import anyio.to_thread

from tenantry.controlplane.base import ControlStore, Tenant
from tenantry.core.credentials import ApiKeyRecord, RevocationList
from tenantry.core.errors import StorageError
from tenantry.core.limits import TenantLimits
from tenantry.core.threads import BlockingRunner
from tenantry.core.upstreams import UpstreamSpec

__all__ = ["TenantDirectory", "ControlSnapshot", "ChangeListener"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ControlSnapshot:
    """One consistent read of the control plane (swapped as a whole, never mutated)."""

    tenants: dict[str, Tenant] = field(default_factory=dict)
    revocations: RevocationList = field(default_factory=RevocationList)
    api_keys: dict[str, ApiKeyRecord] = field(default_factory=dict)
    upstreams: dict[str, UpstreamSpec] = field(default_factory=dict)
    revision: int | None = None


ChangeListener = Callable[[ControlSnapshot, ControlSnapshot], Awaitable[None]]
"""Called on the event loop with ``(before, after)`` whenever the polled view changes."""


class TenantDirectory:
    def __init__(
        self,
        store: ControlStore,
        *,
        poll_interval: float = 0.25,
        default_limits: TenantLimits | None = None,
        offload: BlockingRunner | None = None,
    ) -> None:
        """:param offload: runs the blocking store reads (default: anyio's shared thread pool); the
        server passes the system's reserved thread capacity, so tenants' work never delays a poll."""
        self._store = store
        self._offload: BlockingRunner = offload or anyio.to_thread.run_sync
        self._default_limits = default_limits or TenantLimits()
        self._limits: dict[str, TenantLimits] = {}
        self._poll_interval = poll_interval
        self._snapshot = ControlSnapshot()
        self._lock = threading.Lock()
        self._listeners: list[ChangeListener] = []
        self._notified = self._snapshot
        self.healthy = False

    @property
    def store(self) -> ControlStore:
        return self._store

    @property
    def snapshot(self) -> ControlSnapshot:
        return self._snapshot

    def get(self, tenant_id: str) -> Tenant | None:
        return self._snapshot.tenants.get(tenant_id)

    def limits(self, tenant_id: str) -> TenantLimits:
        """The tenant's effective limits (the defaults for a tenant not known here)."""
        found = self._limits.get(tenant_id)
        if found is None:
            tenant = self._snapshot.tenants.get(tenant_id)
            found = self._default_limits if tenant is None else tenant.limits(self._default_limits)
            if tenant is not None:
                self._limits[tenant_id] = found
        return found

    @property
    def default_limits(self) -> TenantLimits:
        return self._default_limits

    def all(self) -> list[Tenant]:
        return sorted(self._snapshot.tenants.values(), key=lambda t: t.id)

    @property
    def revocations(self) -> RevocationList:
        return self._snapshot.revocations

    def api_key(self, key_id: str) -> ApiKeyRecord | None:
        return self._snapshot.api_keys.get(key_id)

    def add_listener(self, listener: ChangeListener) -> None:
        self._listeners.append(listener)

    def refresh(self, *, force: bool = False) -> bool:
        """Re-read the store if it changed; returns whether the view changed.

        :raises StorageError: when the store cannot be read (the last good view is kept).
        """
        with self._lock:
            revision = self._store.revision()
            if not force and revision == self._snapshot.revision:
                self.healthy = True
                return False
            self._snapshot = ControlSnapshot(
                tenants={t.id: t for t in self._store.list_tenants()},
                revocations=RevocationList(self._store.list_revocations(int(time.time()))),
                api_keys={k.key_id: k for k in self._store.list_api_keys()},
                upstreams={u.name: u for u in self._store.list_upstreams()},
                revision=revision,
            )
            self._limits = {}
            self.healthy = True
            return True

    async def run(self) -> None:
        """Poll until cancelled. Store failures keep the last view and mark the directory unhealthy."""
        while True:
            try:
                await self.sync()
            except StorageError as exc:
                if self.healthy:
                    logger.error("control store unavailable; serving the last known view", extra={"code": exc.code})
                self.healthy = False
            await anyio.sleep(self._poll_interval)

    async def sync(self, *, force: bool = False) -> None:
        """Refresh now (in a worker thread) and tell the listeners what changed since they last heard.

        :raises StorageError: when the store cannot be read.
        """
        await self._offload(lambda: self.refresh(force=force))
        current = self._snapshot
        before = self._notified
        if current is before:
            return
        self._notified = current
        for listener in self._listeners:
            try:
                await listener(before, current)
            except Exception:  # one failing listener must not stop the polling
                logger.exception("control-plane change listener failed")
