"""Storage quotas of ``ctx.files`` on both backends (local directory, S3 on a real moto server),
and capped listings. Every refusal has its positive control beside it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import anyio
import pytest

from tenantry.core.errors import NotFound, ScopeViolation, StorageQuotaExceeded, UsageError
from tenantry.core.limits import TenantLimits
from tenantry.scoping.files.base import FileScopes
from tenantry.scoping.files.local import USAGE_LEDGER, LocalFileScopes
from tenantry.scoping.threads import ThreadBulkheads
from tests.support.s3 import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY

pytestmark = pytest.mark.anyio

QUOTA = replace(TenantLimits(), file_bytes=100, file_count=4)


def heads() -> ThreadBulkheads:
    return ThreadBulkheads(lambda tenant_id: QUOTA if tenant_id == "acme" else TenantLimits())


@pytest.fixture(params=["local", "s3"])
def make_scopes(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[object]:
    """A factory: each call is a fresh scopes object on the same storage (a restart, or a replica)."""
    opened: list[object] = []
    if request.param == "local":

        def local() -> FileScopes:
            return LocalFileScopes(tmp_path, bulkheads=heads())

        yield local
        return
    from tenantry.scoping.files.s3 import S3FileScopes

    server = request.getfixturevalue("s3_server")
    bucket = server.create_bucket()

    def s3() -> FileScopes:
        scopes = S3FileScopes(
            bucket=bucket,
            endpoint_url=server.endpoint_url,
            region=REGION,
            access_key_id=ACCESS_KEY_ID,
            secret_access_key=SECRET_ACCESS_KEY,
            bulkheads=heads(),
        )
        opened.append(scopes)
        return scopes

    yield s3
    for scopes in opened:
        scopes.close()  # type: ignore[attr-defined]
    server.delete_bucket(bucket)


@pytest.fixture
async def scopes(make_scopes) -> AsyncIterator[FileScopes]:  # type: ignore[no-untyped-def]
    yield make_scopes()


async def test_a_write_beyond_the_byte_quota_is_refused_and_writes_nothing(scopes: FileScopes) -> None:
    files = scopes.for_tenant("acme")
    await files.write_bytes("a.bin", b"x" * 60)  # positive control: within the quota
    with pytest.raises(StorageQuotaExceeded) as refused:
        await files.write_bytes("dir/b.bin", b"y" * 41)
    assert str(refused.value) == (
        "storage quota exceeded: 60 of 100 bytes stored, this write needs 41 more; delete files first"
    )
    assert refused.value.http_status == 507
    assert [entry.path for entry in await files.list()] == ["a.bin"]
    with pytest.raises(NotFound):
        await files.read_bytes("dir/b.bin")
    await files.write_bytes("dir/b.bin", b"y" * 40)  # exactly up to the quota is fine
    assert sum(entry.size for entry in await files.list()) == 100


async def test_a_credential_narrowed_to_a_prefix_is_not_told_the_tenants_usage(scopes: FileScopes) -> None:
    """It may not see the rest of its tenant's files, so not how much they hold either; the
    tenant-wide credential (the control) is told the figures."""
    await scopes.for_tenant("acme").write_bytes("private/payroll.csv", b"x" * 77)
    narrowed = scopes.for_tenant("acme", prefix="reports")
    with pytest.raises(StorageQuotaExceeded) as refused:
        await narrowed.write_bytes("reports/q3.txt", b"y" * 30)
    assert "77" not in str(refused.value) and "100" not in str(refused.value)
    assert "no room for this write" in str(refused.value)
    with pytest.raises(StorageQuotaExceeded, match="77 of 100 bytes stored"):
        await scopes.for_tenant("acme").write_bytes("reports/q3.txt", b"y" * 30)
    await narrowed.write_bytes("reports/q3.txt", b"y" * 23)  # within the quota, written


async def test_a_write_beyond_the_file_count_is_refused(scopes: FileScopes) -> None:
    files = scopes.for_tenant("acme")
    for index in range(4):
        await files.write_text(f"f{index}", "1")
    with pytest.raises(StorageQuotaExceeded, match="file count quota exceeded: 4 of 4 files stored"):
        await files.write_text("f4", "1")
    await files.write_text("f0", "overwrite")  # an overwrite adds no file
    assert len(await files.list()) == 4


async def test_deletes_and_overwrites_give_the_space_back(scopes: FileScopes) -> None:
    files = scopes.for_tenant("acme")
    await files.write_bytes("big", b"x" * 90)
    with pytest.raises(StorageQuotaExceeded):
        await files.write_bytes("more", b"y" * 20)
    await files.write_bytes("big", b"x" * 10)  # shrinking the file frees 80 bytes
    await files.write_bytes("more", b"y" * 20)
    assert await files.delete("big")
    assert not await files.delete("big")
    await files.write_bytes("again", b"z" * 80)
    with pytest.raises(StorageQuotaExceeded):
        await files.write_bytes("over", b"!")


async def test_one_tenants_full_quota_does_not_touch_another(scopes: FileScopes) -> None:
    await scopes.for_tenant("acme").write_bytes("full", b"x" * 100)
    with pytest.raises(StorageQuotaExceeded):
        await scopes.for_tenant("acme").write_bytes("one-more", b"x")
    await scopes.for_tenant("globex").write_bytes("fine", b"x" * 1000)
    assert [entry.path for entry in await scopes.for_tenant("globex").list()] == ["fine"]


async def test_usage_survives_a_restart(make_scopes) -> None:  # type: ignore[no-untyped-def]
    await make_scopes().for_tenant("acme").write_bytes("a", b"x" * 70)
    restarted = make_scopes()
    with pytest.raises(StorageQuotaExceeded, match="70 of 100 bytes stored"):
        await restarted.for_tenant("acme").write_bytes("b", b"x" * 31)
    await restarted.for_tenant("acme").write_bytes("b", b"x" * 30)


async def test_concurrent_writes_never_pass_the_quota(make_scopes) -> None:  # type: ignore[no-untyped-def]
    # Two scopes objects, as two replicas on the same storage, racing 24 writes of 10 bytes.
    replicas = [make_scopes(), make_scopes()]
    outcomes: list[str] = []

    async def write(index: int) -> None:
        try:
            await replicas[index % 2].for_tenant("acme").write_bytes(f"d{index % 3}/f{index}", b"x" * 10)
            outcomes.append("ok")
        except StorageQuotaExceeded:
            outcomes.append("refused")

    limits = replace(QUOTA, file_count=1000)
    for replica in replicas:
        replica.bulkheads.limits_for = lambda _tenant_id: limits  # type: ignore[attr-defined]
    async with anyio.create_task_group() as tg:
        for index in range(24):
            tg.start_soon(write, index)
    stored = await replicas[0].for_tenant("acme").list()
    assert sum(entry.size for entry in stored) <= 100
    assert outcomes.count("ok") == len(stored) == 10
    assert outcomes.count("refused") == 14


async def test_reserved_names_are_refused(scopes: FileScopes) -> None:
    files = scopes.for_tenant("acme")
    for path in (".tenantry-usage.json", "a/.tenantry-x.tmp"):
        with pytest.raises(ScopeViolation, match="reserved"):
            await files.write_text(path, "forged usage")
        with pytest.raises(ScopeViolation, match="reserved"):
            await files.read_text(path)
    await files.write_text("tenantry-usage.json", "an ordinary name")  # positive control


async def test_a_listing_is_capped_and_says_it_was_cut(scopes: FileScopes) -> None:
    files = scopes.for_tenant("globex")
    names = ["a-b", "a/x", "a/y/z", "a0", "b"]
    for name in names:
        await files.write_text(name, "x")
    full = await files.list()
    assert [entry.path for entry in full] == sorted(names) == names
    assert not full.truncated
    cut = await files.list(limit=3)
    assert [entry.path for entry in cut] == names[:3]
    assert cut.truncated and cut.limit == 3
    exact = await files.list(limit=5)
    assert not exact.truncated
    with pytest.raises(UsageError, match="limit must be an integer from 1 to 10000"):
        await files.list(limit=0)


# -- local only: processes sharing the data dir, crash recovery ----------------------------------


def test_two_processes_writing_one_tenant_never_pass_its_quota(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import anyio
        from dataclasses import replace
        from pathlib import Path
        from tenantry.core.errors import StorageQuotaExceeded
        from tenantry.core.limits import TenantLimits
        from tenantry.scoping.files.local import LocalFileScopes
        from tenantry.scoping.threads import ThreadBulkheads

        limits = replace(TenantLimits(), file_bytes=200, file_count=1000)
        scopes = LocalFileScopes(Path({str(tmp_path)!r}), bulkheads=ThreadBulkheads(lambda _t: limits))

        async def main(tag):
            files = scopes.for_tenant("acme")
            ok = 0
            for index in range(30):
                try:
                    await files.write_bytes(f"{{tag}}/{{index}}", b"x" * 10)
                    ok += 1
                except StorageQuotaExceeded:
                    pass
            print(ok)

        import sys
        anyio.run(main, sys.argv[1])
        """
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, tag], stdout=subprocess.PIPE) for tag in ("p", "q")]
    written = [int(proc.communicate(timeout=60)[0]) for proc in procs]
    assert sum(written) == 20
    stored = tmp_path / "tenants" / "acme" / "files"
    directories = [path for path in stored.iterdir() if path.is_dir()]  # p/ and q/, or one if it wrote all 20
    assert LocalFileScopes(tmp_path).usage("acme") == (200, 20 + len(directories))
    assert sum(path.stat().st_size for path in stored.rglob("*") if path.is_file()) == 200


async def test_a_writer_that_died_mid_write_is_recounted(tmp_path: Path) -> None:
    scopes = LocalFileScopes(tmp_path, bulkheads=heads())
    files = scopes.for_tenant("acme")
    await files.write_bytes("a", b"x" * 50)
    ledger = tmp_path / "tenants" / "acme" / USAGE_LEDGER
    record = json.loads(ledger.read_text())
    assert (record["bytes"], record["files"], record["state"]) == (50, 1, "clean")
    # A writer killed between its rename and its ledger update: the file is there, the ledger is dirty.
    (tmp_path / "tenants" / "acme" / "files" / "b").write_bytes(b"y" * 40)
    (tmp_path / "tenants" / "acme" / "files" / ".tenantry-orphan.tmp").write_bytes(b"z" * 500)
    ledger.write_text(json.dumps({**record, "state": "dirty"}))
    with pytest.raises(StorageQuotaExceeded, match="90 of 100 bytes stored"):
        await files.write_bytes("c", b"x" * 11)
    assert not (tmp_path / "tenants" / "acme" / "files" / ".tenantry-orphan.tmp").exists()
    assert scopes.usage("acme") == (90, 2)


async def test_a_ledger_from_before_a_reboot_is_recounted(tmp_path: Path) -> None:
    scopes = LocalFileScopes(tmp_path, bulkheads=heads())
    await scopes.for_tenant("acme").write_bytes("a", b"x" * 50)
    ledger = tmp_path / "tenants" / "acme" / USAGE_LEDGER
    ledger.write_text(json.dumps({"bytes": 0, "files": 0, "state": "clean", "boot": "an-earlier-boot"}))
    assert scopes.usage("acme") == (50, 1)


async def test_the_directories_of_deep_paths_count_against_the_quota(tmp_path: Path) -> None:
    """From the outside attack review: one 1-byte file at a 1,024-character path made 511
    directories (511 inodes, 2 MB of disk) that counted for nothing. Each counts like a file now."""
    scopes = LocalFileScopes(tmp_path, bulkheads=heads())  # acme: file_count=4, file_bytes=100
    files = scopes.for_tenant("acme")
    root = tmp_path / "tenants" / "acme" / "files"
    await files.write_text("flat/a.txt", "1")  # positive control: a file in one directory is fine
    assert scopes.usage("acme") == (1, 2)
    with pytest.raises(
        StorageQuotaExceeded, match=r"2 of 4 files stored \(directories count as files\), this write needs 512"
    ):
        await files.write_text("/".join(["b"] * 511) + "/f", "x")
    assert sum(len(dirs) for _, dirs, _ in os.walk(root)) == 1  # the refused write made none
    await files.write_text("flat/b/c.txt", "1")  # a new directory and its file: 4 of 4
    assert scopes.usage("acme") == (2, 4)
    assert await files.delete("flat/b/c.txt")  # gives back the file and the directory it emptied
    assert scopes.usage("acme") == (1, 2)
