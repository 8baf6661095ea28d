"""The gateway's storage guard around a tenant's command-upstream calls: refused at the quota,
reconciled after, and the file size limit its processes run under."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import anyio
import pytest

from tenantry.core.errors import StorageQuotaExceeded
from tenantry.core.limits import TenantLimits
from tenantry.gateway import file_size_limit
from tenantry.gateway.storage import UpstreamStorage
from tenantry.scoping.files.local import (
    LocalFileScopes,
    ScanBounds,
    TenantUsage,
    reconcile_usage,
    recorded_usage,
    tenant_files_root,
)
from tenantry.scoping.threads import ThreadBulkheads

pytestmark = pytest.mark.anyio

QUOTA = replace(TenantLimits(), file_bytes=1000, file_count=5)
LAUNCHER = Path(file_size_limit.__file__)


def heads() -> ThreadBulkheads:
    return ThreadBulkheads(lambda _tenant_id: QUOTA)


def upstream_writes(data_dir: Path, name: str, size: int, tenant: str = "acme") -> None:
    root = tenant_files_root(data_dir, tenant)
    root.mkdir(parents=True, exist_ok=True)
    (root / name).write_bytes(b"u" * size)


async def test_a_call_is_refused_once_the_tenant_is_at_its_byte_quota(tmp_path: Path) -> None:
    storage = UpstreamStorage(tmp_path, heads())
    upstream_writes(tmp_path, "a", 999)
    await storage.reconcile("acme")
    await storage.check_room("acme")  # the positive control: one byte of room is room
    upstream_writes(tmp_path, "b", 1)
    await storage.reconcile("acme")
    with pytest.raises(StorageQuotaExceeded, match="1000 of 1000 bytes stored"):
        await storage.check_room("acme")
    await storage.check_room("globex")  # another tenant's room is its own


async def test_a_call_is_refused_once_the_tenant_is_at_its_file_count(tmp_path: Path) -> None:
    storage = UpstreamStorage(tmp_path, heads())
    for n in range(5):
        upstream_writes(tmp_path, f"f{n}", 1)
    await storage.reconcile("acme")
    with pytest.raises(StorageQuotaExceeded, match="5 of 5 files stored"):
        await storage.check_room("acme")


async def test_a_native_delete_makes_room_for_the_upstream_again(tmp_path: Path) -> None:
    storage = UpstreamStorage(tmp_path, heads())
    upstream_writes(tmp_path, "big", 1200)
    await storage.reconcile("acme")
    with pytest.raises(StorageQuotaExceeded):
        await storage.check_room("acme")
    assert await LocalFileScopes(tmp_path, bulkheads=heads()).for_tenant("acme").delete("big")
    await storage.check_room("acme")


async def test_concurrent_reconciles_of_one_tenant_are_coalesced_and_all_see_the_disk(tmp_path: Path) -> None:
    storage = UpstreamStorage(tmp_path, heads())
    upstream_writes(tmp_path, "a", 600)
    async with anyio.create_task_group() as tasks:
        for _ in range(8):
            tasks.start_soon(storage.reconcile, "acme")
    assert LocalFileScopes(tmp_path, bulkheads=heads()).usage("acme") == (600, 1)


async def test_a_reconcile_survives_the_cancellation_of_its_call(tmp_path: Path) -> None:
    storage = UpstreamStorage(tmp_path, heads())
    upstream_writes(tmp_path, "a", 1500)
    with anyio.CancelScope() as scope:
        scope.cancel()
        try:
            await anyio.sleep(1)  # the call, cancelled (halt, timeout)
        finally:
            await storage.reconcile("acme")
    with pytest.raises(StorageQuotaExceeded):
        await storage.check_room("acme")


def run_limited(limit: int, size: int, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    writer = f"with open({str(tmp_path / 'out')!r}, 'wb') as out: out.write(b'x' * {size})"
    return subprocess.run(
        [sys.executable, "-I", "-S", str(LAUNCHER), str(limit), sys.executable, "-c", writer],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_an_upstream_process_cannot_write_a_file_past_the_limit(tmp_path: Path) -> None:
    refused = run_limited(1000, 2000, tmp_path)
    assert refused.returncode != 0 and "File too large" in refused.stderr, refused.stderr
    written = run_limited(1000, 1000, tmp_path)  # the positive control: up to the limit is fine
    assert written.returncode == 0, written.stderr
    assert (tmp_path / "out").stat().st_size == 1000


def bulk_links(data_dir: Path, count: int, tenant: str = "acme") -> None:
    """Dangling symlinks in ``files`` sorting before anything else: counted as nothing (only regular
    files and directories count there, and no link is followed), but walked first."""
    root = tenant_files_root(data_dir, tenant)
    root.mkdir(parents=True, exist_ok=True)
    for n in range(count):
        (root / f"a{n:04}").symlink_to("nowhere")


async def test_a_floor_under_the_quota_does_not_admit_a_call(tmp_path: Path) -> None:
    # The bounded rescan spends its entries on entries that count for nothing and stops before
    # the bytes behind them: its floor (0 bytes) would admit every call while the disk fills.
    storage = UpstreamStorage(tmp_path, heads(), bounds=ScanBounds(entries=40))
    bulk_links(tmp_path, 60)
    upstream_writes(tmp_path, "zz-behind", 5000)
    await storage.reconcile("acme")
    assert recorded_usage(tmp_path, "acme", QUOTA).floor
    with pytest.raises(StorageQuotaExceeded, match="could not be measured"):
        await storage.check_room("acme")


async def test_a_floor_that_a_fresh_rescan_completes_is_decided_on_the_exact_figure(tmp_path: Path) -> None:
    # The positive control: a floor left by a rescan cut short (its time bound, under load) is
    # not a lock-out when the tree is small enough to be counted now.
    storage = UpstreamStorage(tmp_path, heads())
    upstream_writes(tmp_path, "a", 500)
    reconcile_usage(tmp_path, "acme", QUOTA, ScanBounds(seconds=-1))
    assert recorded_usage(tmp_path, "acme", QUOTA).floor
    await storage.check_room("acme")
    assert recorded_usage(tmp_path, "acme", QUOTA) == TenantUsage(500, 1)
    upstream_writes(tmp_path, "b", 600)
    reconcile_usage(tmp_path, "acme", QUOTA, ScanBounds(seconds=-1))
    with pytest.raises(StorageQuotaExceeded, match="1100 of 1000 bytes stored"):
        await storage.check_room("acme")
