"""What a tenant's command upstreams write counts against the tenant's file quota.

A tenant's command (stdio) upstream runs in ``<data_dir>/tenants/<id>/upstreams/<name>`` and, when
its command or environment has ``{tenant_dir}``, works in the tenant's ``files`` tree: it writes
there without ``ctx.files``, so nothing refuses its writes before they happen. Around every call,
resource read and prompt get on such a session the gateway therefore:

* **before**: refuses with ``storage_quota_exceeded`` when the tenant's recorded usage is already
  at or over its ``file_bytes`` or ``file_count`` (the upstream might write, and there is no room;
  a native delete makes room again);
* **after** (an answer, an error or a cancellation alike): reconciles the tenant's usage ledger
  with a bounded rescan of those trees (:func:`~tenantry.scoping.files.local.reconcile_usage`),
  in the tenant's own thread capacity and under the ledger's lock, so the native writes after it
  are refused once the tenant is over. Rescans of one tenant are coalesced: a caller whose call
  ended before a rescan started is covered by that one;
* **at start**: runs the process under ``RLIMIT_FSIZE`` equal to the tenant's ``file_bytes``
  (see :mod:`tenantry.gateway.file_size_limit`), so no single file it writes, anywhere, grows
  past the tenant's whole quota, even within one call.

What an upstream writes *during* a call, or after answering, is only counted at the end of
that call, or of the tenant's next one: one call can overshoot the quota, by at most what it
writes in its call time. A hard bound on the disk needs a filesystem quota (docs/gateway.md).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import anyio

from tenantry.core.errors import StorageQuotaExceeded, TenantryError
from tenantry.core.limits import TenantLimits
from tenantry.scoping.files.local import ScanBounds, TenantUsage, reconcile_usage, recorded_usage
from tenantry.scoping.threads import ThreadBulkheads

__all__ = ["UpstreamStorage"]

logger = logging.getLogger(__name__)

_RECONCILE_GRACE = 10.0
"""Seconds past the rescan's own bound that the gateway waits for it (the lock, a free thread)."""


@dataclass
class _Rescans:
    lock: anyio.Lock
    requested: int = 0
    covered: int = 0


class UpstreamStorage:
    """The quota guard around one gateway's per-tenant command-upstream calls.

    :param data_dir: the data dir whose ``tenants/<id>`` trees the upstreams write in.
    :param bulkheads: the tenants' thread capacity, and their limits (``file_bytes``, ``file_count``).
    :param bounds: how far one rescan goes before it records a floor.
    """

    def __init__(self, data_dir: Path, bulkheads: ThreadBulkheads, *, bounds: ScanBounds | None = None) -> None:
        self._data_dir = data_dir
        self._bulkheads = bulkheads
        self._bounds = bounds or ScanBounds()
        self._rescans: dict[str, _Rescans] = {}

    def file_size_limit(self, tenant_id: str) -> int:
        """The largest file a process of the tenant's command upstreams may write (RLIMIT_FSIZE)."""
        return self._bulkheads.limits_for(tenant_id).file_bytes

    async def check_room(self, tenant_id: str) -> None:
        """:raises StorageQuotaExceeded: the tenant's usage is at or over its quota.
        :raises StorageError: its ledger cannot be read."""
        limits = self._bulkheads.limits_for(tenant_id)
        usage = await self._bulkheads.run(
            lambda: recorded_usage(self._data_dir, tenant_id, limits, self._bounds), tenant_id=tenant_id
        )
        if usage.floor and usage.files < limits.file_count and usage.bytes < limits.file_bytes:
            # A floor may refuse, never admit: what the cut-short rescan did not reach (behind
            # many directories, say) may be anything. One fresh bounded rescan decides.
            usage = await self._bulkheads.run(
                lambda: reconcile_usage(self._data_dir, tenant_id, limits, self._bounds), tenant_id=tenant_id
            )
        self._refuse_over(usage, limits)
        if usage.floor:
            raise StorageQuotaExceeded(
                "storage usage could not be measured: the rescan of this tenant's files and upstream"
                f" working directories stopped at its bound ({self._bounds.entries} entries or"
                f" {self._bounds.seconds:g} s) after {usage.bytes} bytes and {usage.files} files; the"
                " upstream may write, so it is not called until files or directories are deleted"
            )

    @staticmethod
    def _refuse_over(usage: TenantUsage, limits: TenantLimits) -> None:
        if usage.files >= limits.file_count:
            raise StorageQuotaExceeded(
                f"file count quota used up: {_at_least(usage)}{usage.files} of {limits.file_count} files stored"
                " (files and this tenant's upstream working directories); the upstream may write, so it is"
                " not called until files are deleted"
            )
        if usage.bytes >= limits.file_bytes:
            raise StorageQuotaExceeded(
                f"storage quota used up: {_at_least(usage)}{usage.bytes} of {limits.file_bytes} bytes stored"
                " (files and this tenant's upstream working directories); the upstream may write, so it is"
                " not called until files are deleted"
            )

    async def reconcile(self, tenant_id: str) -> None:
        """Bring the tenant's ledger up to what is on disk now (bounded; survives the caller's
        cancellation). A failure is logged, never raised: the call's own outcome stands, and the
        next call's rescan tries again."""
        rescans = self._rescans.setdefault(tenant_id, _Rescans(anyio.Lock()))
        rescans.requested += 1
        ticket = rescans.requested
        limits = self._bulkheads.limits_for(tenant_id)
        with anyio.move_on_after(self._bounds.seconds + _RECONCILE_GRACE, shield=True) as waited:
            async with rescans.lock:
                if rescans.covered >= ticket:
                    return  # a rescan that started after this call ended has run
                starting = rescans.requested
                try:
                    usage = await self._bulkheads.run(
                        lambda: reconcile_usage(self._data_dir, tenant_id, limits, self._bounds), tenant_id=tenant_id
                    )
                except TenantryError as exc:
                    logger.warning(
                        "could not reconcile a tenant's storage usage after an upstream call",
                        extra={"tenant_id": tenant_id, "code": exc.code},
                    )
                    return
                rescans.covered = starting
                if usage.floor:
                    logger.info(
                        "a tenant's storage rescan stopped at its bound; recorded a floor",
                        extra={"tenant_id": tenant_id, "bytes": usage.bytes, "files": usage.files},
                    )
        if waited.cancelled_caught:
            logger.warning("reconciling a tenant's storage usage took too long", extra={"tenant_id": tenant_id})


def _at_least(usage: TenantUsage) -> str:
    return "at least " if usage.floor else ""
