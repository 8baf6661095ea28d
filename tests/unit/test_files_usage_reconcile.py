"""Reconciling a tenant's usage ledger with what is on disk (bytes a command upstream wrote there
without ``ctx.files``): bounded rescans, floors that refuse but never admit, no symlink followed."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from tenantry.core.errors import StorageQuotaExceeded
from tenantry.core.limits import TenantLimits
from tenantry.scoping.files.local import (
    USAGE_LEDGER,
    LocalFileScopes,
    ScanBounds,
    TenantUsage,
    reconcile_usage,
    recorded_usage,
    tenant_files_root,
    tenant_upstreams_root,
)
from tenantry.scoping.threads import ThreadBulkheads

pytestmark = pytest.mark.anyio

QUOTA = replace(TenantLimits(), file_bytes=1000, file_count=10)


def scopes_for(data_dir: Path, limits: TenantLimits = QUOTA) -> LocalFileScopes:
    return LocalFileScopes(data_dir, bulkheads=ThreadBulkheads(lambda _tenant_id: limits))


def written_behind_the_ledger(data_dir: Path, relative: str, size: int, *, tenant: str = "acme") -> Path:
    """A file the way an upstream writes it: straight to disk, no handle, no ledger."""
    path = tenant_files_root(data_dir, tenant).parent / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"u" * size)
    return path


def ledger_record(data_dir: Path, tenant: str = "acme") -> dict[str, object]:
    return dict(json.loads((tenant_files_root(data_dir, tenant).parent / USAGE_LEDGER).read_text()))


async def test_bytes_written_behind_the_ledger_are_refused_after_a_reconcile(tmp_path: Path) -> None:
    files = scopes_for(tmp_path).for_tenant("acme")
    await files.write_bytes("native.txt", b"n" * 100)
    written_behind_the_ledger(tmp_path, "files/upstream.txt", 850)
    assert scopes_for(tmp_path).usage("acme") == (100, 1)  # the hole: the ledger does not see it

    assert reconcile_usage(tmp_path, "acme", QUOTA) == TenantUsage(950, 2)
    with pytest.raises(StorageQuotaExceeded, match="950 of 1000 bytes stored"):
        await files.write_bytes("more.txt", b"m" * 100)
    await files.write_bytes("fits.txt", b"f" * 50)  # the positive control: what fits is written
    assert scopes_for(tmp_path).usage("acme") == (1000, 3)


async def test_an_upstreams_working_directory_counts_against_the_quota(tmp_path: Path) -> None:
    written_behind_the_ledger(tmp_path, "upstreams/notes/cache/blob", 990)
    assert reconcile_usage(tmp_path, "acme", QUOTA) == TenantUsage(990, 2)  # cache/ and blob
    files = scopes_for(tmp_path).for_tenant("acme")
    with pytest.raises(StorageQuotaExceeded):
        await files.write_bytes("a.txt", b"a" * 20)
    await files.write_bytes("b.txt", b"b" * 10)


async def test_another_tenants_tree_is_not_counted(tmp_path: Path) -> None:
    written_behind_the_ledger(tmp_path, "files/big", 5000, tenant="globex")
    written_behind_the_ledger(tmp_path, "files/small", 10)
    assert reconcile_usage(tmp_path, "acme", QUOTA) == TenantUsage(10, 1)


async def test_a_deleted_file_gives_its_bytes_back_after_a_reconcile(tmp_path: Path) -> None:
    behind = written_behind_the_ledger(tmp_path, "files/upstream.txt", 990)
    reconcile_usage(tmp_path, "acme", QUOTA)
    behind.unlink()  # the upstream removed it
    assert reconcile_usage(tmp_path, "acme", QUOTA) == TenantUsage(0, 0)
    await scopes_for(tmp_path).for_tenant("acme").write_bytes("a.txt", b"a" * 500)


async def test_symlinks_are_never_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "huge").write_bytes(b"h" * 5000)
    root = tenant_files_root(tmp_path, "acme")
    root.mkdir(parents=True)
    os.symlink(outside, root / "dir-link")
    os.symlink(outside / "huge", root / "file-link")
    upstreams = tenant_upstreams_root(root)
    upstreams.mkdir()
    os.symlink(outside, upstreams / "notes")
    written_behind_the_ledger(tmp_path, "files/real", 7)
    assert reconcile_usage(tmp_path, "acme", QUOTA) == TenantUsage(7, 2)  # real, and the upstream's link itself


async def test_a_reserved_name_hides_no_bytes(tmp_path: Path) -> None:
    hidden = written_behind_the_ledger(tmp_path, "files/.tenantry-sneaky.tmp", 5000)
    assert reconcile_usage(tmp_path, "acme", QUOTA) == TenantUsage(0, 0)
    assert not hidden.exists()  # removed as a dead writer's leftover, not kept uncounted


async def test_a_rescan_stops_once_the_tenant_is_over_and_records_a_floor(tmp_path: Path) -> None:
    for n in range(30):
        written_behind_the_ledger(tmp_path, f"files/f{n:02}", 100)
    usage = reconcile_usage(tmp_path, "acme", QUOTA)
    assert usage.floor and usage.files < 30 and (usage.bytes > 1000 or usage.files > 10)
    assert ledger_record(tmp_path)["floor"] is True
    with pytest.raises(StorageQuotaExceeded):
        await scopes_for(tmp_path).for_tenant("acme").write_bytes("a.txt", b"a")


async def test_a_floor_that_would_admit_a_write_is_recounted_first(tmp_path: Path) -> None:
    for n in range(8):
        written_behind_the_ledger(tmp_path, f"files/f{n}", 120)  # 960 bytes: under the quota by 40
    usage = reconcile_usage(tmp_path, "acme", QUOTA, ScanBounds(entries=3))
    assert usage.floor and usage.bytes < 960
    files = scopes_for(tmp_path).for_tenant("acme")
    with pytest.raises(StorageQuotaExceeded, match="960 of 1000 bytes stored"):
        await files.write_bytes("a.txt", b"a" * 100)  # the floor alone would have admitted it
    assert "floor" not in ledger_record(tmp_path)  # the exact figure replaced it
    await files.write_bytes("b.txt", b"b" * 40)  # the positive control: what fits is written
    assert scopes_for(tmp_path).usage("acme") == (1000, 9)


async def test_a_time_bound_records_a_floor(tmp_path: Path) -> None:
    written_behind_the_ledger(tmp_path, "files/a", 10)
    usage = reconcile_usage(tmp_path, "acme", QUOTA, ScanBounds(seconds=-1))
    assert usage == TenantUsage(0, 0, floor=True)
    assert scopes_for(tmp_path).usage("acme") == (10, 1)  # the operator's figure is exact


async def test_a_delete_under_a_floor_keeps_it_a_floor(tmp_path: Path) -> None:
    for n in range(4):
        written_behind_the_ledger(tmp_path, f"files/f{n}", 100)
    reconcile_usage(tmp_path, "acme", QUOTA, ScanBounds(entries=2))
    assert await scopes_for(tmp_path).for_tenant("acme").delete("f0")
    assert ledger_record(tmp_path)["floor"] is True


async def test_the_recorded_usage_reconciles_a_missing_ledger(tmp_path: Path) -> None:
    written_behind_the_ledger(tmp_path, "files/a", 10)
    written_behind_the_ledger(tmp_path, "upstreams/notes/b", 20)
    assert recorded_usage(tmp_path, "acme", QUOTA) == TenantUsage(30, 2)
    written_behind_the_ledger(tmp_path, "files/c", 40)  # not seen until the next reconcile
    assert recorded_usage(tmp_path, "acme", QUOTA) == TenantUsage(30, 2)


async def test_a_native_recount_counts_the_upstreams_working_directories_too(tmp_path: Path) -> None:
    written_behind_the_ledger(tmp_path, "upstreams/notes/b", 20)
    written_behind_the_ledger(tmp_path, "files/a", 10)
    assert scopes_for(tmp_path).usage("acme") == (30, 2)  # no ledger yet: recounted


async def test_an_upstreams_empty_directories_links_and_fifos_count_as_entries(tmp_path: Path) -> None:
    """Inodes of the shared disk an upstream process made without writing a byte: each counts
    against ``file_count`` like a file (the ``ctx.files`` tree's regular files are the control)."""
    upstream = tenant_upstreams_root(tenant_files_root(tmp_path, "acme")) / "notes"
    upstream.mkdir(parents=True)
    for n in range(4):
        (upstream / f"empty-{n}").mkdir()
    os.symlink("/nowhere", upstream / "link")
    os.mkfifo(upstream / "fifo")
    written_behind_the_ledger(tmp_path, "files/real", 7)
    assert reconcile_usage(tmp_path, "acme", QUOTA) == TenantUsage(7, 1 + 4 + 2)  # real, 4 dirs, link and fifo


async def test_an_upstream_making_directories_without_end_is_stopped_at_the_file_count(tmp_path: Path) -> None:
    upstream = tenant_upstreams_root(tenant_files_root(tmp_path, "acme")) / "notes"
    upstream.mkdir(parents=True)
    for n in range(50):
        (upstream / f"d{n}").mkdir()
    usage = reconcile_usage(tmp_path, "acme", QUOTA)
    assert usage.files > QUOTA.file_count  # over: a floor is enough to refuse
    with pytest.raises(StorageQuotaExceeded):
        await scopes_for(tmp_path).for_tenant("acme").write_bytes("a.txt", b"a")


async def test_deleting_files_removes_the_directories_it_emptied_and_only_those(tmp_path: Path) -> None:
    """Directories do not count against the quota, so writing and deleting files under ever new
    directories must not leave them behind (an unbounded number of inodes)."""
    files = scopes_for(tmp_path).for_tenant("acme")
    root = tenant_files_root(tmp_path, "acme")
    await files.write_bytes("kept/a/keep.txt", b"k")
    for n in range(30):
        await files.write_bytes(f"d{n}/deep/er/f.txt", b"x")
        assert await files.delete(f"d{n}/deep/er/f.txt")
        await files.write_bytes(f"kept/a/b{n}/f.txt", b"x")
        assert await files.delete(f"kept/a/b{n}/f.txt")
    assert sorted(p.name for p in root.iterdir()) == ["kept"]
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) == ["kept", "kept/a", "kept/a/keep.txt"]
    assert (await files.read_bytes("kept/a/keep.txt")) == b"k"  # the positive control: what is in use stays
    await files.write_bytes("d0/deep/er/f.txt", b"again")  # a removed directory is made again on demand
    assert (await files.read_bytes("d0/deep/er/f.txt")) == b"again"
