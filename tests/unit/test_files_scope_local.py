"""The local file handle: traversal, symlinks, encodings and prefix siblings never escape."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tenantry.core.errors import NotFound, ScopeViolation, UsageError
from tenantry.scoping.files.local import LocalFileScopes, tenant_files_root

pytestmark = pytest.mark.anyio


@pytest.fixture
async def scopes(tmp_path: Path) -> LocalFileScopes:
    scopes = LocalFileScopes(tmp_path, max_file_bytes=1024)
    for tenant in ("acme", "acme-evil", "globex"):
        files = scopes.for_tenant(tenant)
        await files.write_text("README.md", f"{tenant}-canary")
        await files.write_text("reports/q3.txt", f"{tenant} report {tenant}-canary")
    return scopes


async def test_round_trip_and_listing(scopes: LocalFileScopes) -> None:
    files = scopes.for_tenant("acme")
    assert await files.read_text("README.md") == "acme-canary"
    assert [e.path for e in await files.list()] == ["README.md", "reports/q3.txt"]
    assert [e.path for e in await files.list("reports")] == ["reports/q3.txt"]


@pytest.mark.parametrize(
    "path",
    [
        "../globex/files/README.md",
        "../../tenants/globex/files/README.md",
        "reports/../../globex/files/README.md",
        "/etc/passwd",
        "..%2fglobex%2ffiles%2fREADME.md",
        "%2e%2e/globex/files/README.md",
        "..\\globex\\files\\README.md",
        "README.md\x00.txt",
        "\uff0e\uff0e/globex/files/README.md",
    ],
)
async def test_traversal_variants_are_refused(scopes: LocalFileScopes, path: str) -> None:
    with pytest.raises(ScopeViolation):
        await scopes.for_tenant("acme").read_text(path)


async def test_prefix_sibling_cannot_be_reached(scopes: LocalFileScopes) -> None:
    narrowed = scopes.for_tenant("acme", prefix="reports")
    assert await narrowed.read_text("reports/q3.txt") == "acme report acme-canary"
    with pytest.raises(ScopeViolation):
        await narrowed.read_text("README.md")
    with pytest.raises(ScopeViolation):
        await narrowed.read_text("reports-evil/x")
    assert [e.path for e in await narrowed.list()] == ["reports/q3.txt"]


async def test_tenant_named_like_a_prefix_sibling_is_separate(scopes: LocalFileScopes) -> None:
    assert await scopes.for_tenant("acme-evil").read_text("README.md") == "acme-evil-canary"
    assert all("acme-evil" not in e.path for e in await scopes.for_tenant("acme").list())


async def test_symlink_to_another_tenant_is_not_followed(scopes: LocalFileScopes, tmp_path: Path) -> None:
    acme_root = tenant_files_root(tmp_path, "acme")
    globex_root = tenant_files_root(tmp_path, "globex")
    os.symlink(globex_root / "README.md", acme_root / "link.md")
    os.symlink(globex_root, acme_root / "linkdir")
    files = scopes.for_tenant("acme")
    with pytest.raises(ScopeViolation):
        await files.read_text("link.md")
    with pytest.raises(ScopeViolation):
        await files.read_text("linkdir/README.md")
    with pytest.raises(ScopeViolation):
        await files.write_text("linkdir/planted.txt", "x")
    with pytest.raises(ScopeViolation):
        await files.write_text("link.md", "overwrite through link")
    listed = [e.path for e in await files.list()]
    assert "link.md" not in listed and not any(p.startswith("linkdir") for p in listed)
    assert (globex_root / "README.md").read_text() == "globex-canary"
    assert not (globex_root / "planted.txt").exists()


async def test_symlinked_tenant_root_is_refused(tmp_path: Path) -> None:
    scopes = LocalFileScopes(tmp_path)
    await scopes.for_tenant("globex").write_text("a.txt", "globex-canary")
    acme_root = tenant_files_root(tmp_path, "acme")
    acme_root.parent.mkdir(parents=True)
    os.symlink(tenant_files_root(tmp_path, "globex"), acme_root)
    with pytest.raises(ScopeViolation):
        await scopes.for_tenant("acme").read_text("a.txt")
    with pytest.raises(ScopeViolation):
        await scopes.for_tenant("acme").list()


async def test_missing_files_and_limits(scopes: LocalFileScopes) -> None:
    files = scopes.for_tenant("acme")
    with pytest.raises(NotFound):
        await files.read_text("nope.txt")
    with pytest.raises(UsageError):
        await files.write_bytes("big.bin", b"x" * 2048)
    assert await files.delete("README.md") is True
    assert await files.delete("README.md") is False


# -- listing a deep tree -------------------------------------------------------------------------


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_listing_a_deep_tree_holds_a_bounded_number_of_descriptors(
    scopes: LocalFileScopes, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = scopes.for_tenant("acme")
    depth = 200
    deep = "/".join(f"d{level}" for level in range(depth))
    await files.write_text(f"{deep}/leaf.txt", "deep")
    await files.write_text("d0/d1/side.txt", "side")
    baseline = open_fds()
    peak = 0
    real_scandir = os.scandir

    def counting_scandir(fd):  # type: ignore[no-untyped-def]
        nonlocal peak
        peak = max(peak, open_fds())
        return real_scandir(fd)

    monkeypatch.setattr(os, "scandir", counting_scandir)
    paths = [entry.path for entry in await files.list()]
    assert paths == ["README.md", f"{deep}/leaf.txt", "d0/d1/side.txt", "reports/q3.txt"]
    assert peak - baseline <= 4, f"listing held {peak - baseline} descriptors at once"


async def test_listing_still_refuses_a_symlinked_directory_in_a_deep_tree(
    scopes: LocalFileScopes, tmp_path: Path
) -> None:
    files = scopes.for_tenant("acme")
    await files.write_text("a/b/c/own.txt", "own")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("outside-canary")
    os.symlink(outside, tenant_files_root(tmp_path, "acme") / "a" / "b" / "link")
    paths = [entry.path for entry in await files.list()]
    assert "a/b/c/own.txt" in paths  # positive control
    assert not any("secret" in path for path in paths)
    with pytest.raises(ScopeViolation):
        await files.list("a/b/link")
