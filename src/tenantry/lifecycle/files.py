"""``ctx.files``' part of a tenant's life cycle, and the sweep of its directory in the data dir.

Files are copied into the bundle under ``files/`` by their path, streamed in chunks; the usage
ledger (bookkeeping, not the tenant's data) is left out of the export and erased with the rest.
Local files: the tree under ``<data_dir>/tenants/<id>/files``, walked without following
symlinks. S3: every object under ``<root>/<id>/``; a key that is not a canonical path (written
behind the server's back) is counted in the manifest instead of copied, and erased all the same.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from tenantry.core.errors import StorageError
from tenantry.lifecycle.registry import Advance, register
from tenantry.scoping.files.local import USAGE_LEDGER, tenant_files_root
from tenantry.scoping.files.scope import HIDDEN_NAME_PREFIX

if TYPE_CHECKING:
    from tenantry.lifecycle.bundle import Bundle
    from tenantry.runtime import Runtime
    from tenantry.scoping.files.s3 import S3FileScopes

__all__ = ["LocalFilesData", "S3FilesData", "TenantDirectoryData"]

_CHUNK = 1 << 20


def _canonical(relative: str) -> bool:
    parts = PurePosixPath(relative).parts
    return (
        bool(parts)
        and not relative.startswith("/")
        and "//" not in relative
        and not relative.endswith("/")
        and all(p not in (".", "..") and "\x00" not in p and "\\" not in p for p in parts)
    )


@dataclass
class LocalFilesData:
    data_dir: Path
    name: str = "files:local"
    retained: bool = False

    def export(self, tenant_id: str, bundle: Bundle, advance: Advance) -> None:
        root = tenant_files_root(self.data_dir, tenant_id)
        for relative, path in _walk(root):
            if any(part.startswith(HIDDEN_NAME_PREFIX) for part in relative.split("/")):
                continue  # a backend's temporary file, never the tenant's
            with bundle.part(f"files/{relative}", self.name) as out, path.open("rb") as source:
                while chunk := source.read(_CHUNK):
                    out.write(chunk)
            advance(1)

    def erase(self, tenant_id: str) -> None:
        root = tenant_files_root(self.data_dir, tenant_id)
        try:
            if root.is_symlink():
                root.unlink()
            elif root.exists():
                shutil.rmtree(root)
            (root.parent / USAGE_LEDGER).unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot delete the tenant's files: {exc.strerror}") from None

    def leftovers(self, tenant_id: str) -> list[str]:
        root = tenant_files_root(self.data_dir, tenant_id)
        found = [f"{sum(1 for _ in _walk(root))} file(s) under files/"] if root.exists() else []
        if (root.parent / USAGE_LEDGER).exists():
            found.append("its usage ledger")
        return found


def _walk(root: Path) -> Iterator[tuple[str, Path]]:
    """``(relative path, path)`` of every regular file under ``root``, in order, no symlink followed."""
    if root.is_symlink() or not root.is_dir():
        return
    for directory, dirs, files in os.walk(root, followlinks=False):
        dirs.sort()
        for name in sorted(files):
            path = Path(directory, name)
            if stat.S_ISREG(path.lstat().st_mode):
                yield path.relative_to(root).as_posix(), path


@register("tenantry.scoping.files.local.LocalFileScopes")
def _local(adapter: object, runtime: Runtime) -> LocalFilesData:
    return LocalFilesData(runtime.data_dir)


@dataclass
class S3FilesData:
    scopes: S3FileScopes
    name: str = "files:s3"
    retained: bool = False

    def export(self, tenant_id: str, bundle: Bundle, advance: Advance) -> None:
        skipped = 0
        for relative, _size in self.scopes.tenant_objects(tenant_id):
            if relative.startswith(HIDDEN_NAME_PREFIX) and "/" not in relative:
                continue  # the usage ledger
            if not _canonical(relative):
                skipped += 1
                continue
            with bundle.part(f"files/{relative}", self.name) as out:
                for chunk in self.scopes.object_chunks(tenant_id, relative):
                    out.write(chunk)
            advance(1)
        if skipped:
            bundle.write_json("files/_skipped.json", self.name, {"objects_with_non_canonical_keys": skipped})

    def erase(self, tenant_id: str) -> None:
        self.scopes.drop_tenant_blocking(tenant_id)

    def leftovers(self, tenant_id: str) -> list[str]:
        count = sum(1 for _ in self.scopes.tenant_objects(tenant_id))
        return [f"{count} object(s) under its key prefix"] if count else []


@register("tenantry.scoping.files.s3.S3FileScopes")
def _s3(adapter: object, runtime: Runtime) -> S3FilesData:
    return S3FilesData(runtime.scopes.files)  # type: ignore[arg-type]


@dataclass
class TenantDirectoryData:
    """Not a store: ``<data_dir>/tenants/<id>`` itself, removed once every store is erased (what
    any embedded store left there goes with it). Exported by the stores it holds."""

    data_dir: Path
    name: str = "data-dir:tenant"
    retained: bool = False

    def _root(self, tenant_id: str) -> Path:
        return tenant_files_root(self.data_dir, tenant_id).parent

    def export(self, tenant_id: str, bundle: Bundle, advance: Advance) -> None:
        """Nothing of its own: its files belong to the stores above."""

    def erase(self, tenant_id: str) -> None:
        root = self._root(tenant_id)
        try:
            if root.is_symlink():
                root.unlink()
            elif root.exists():
                shutil.rmtree(root)
        except OSError as exc:
            raise StorageError(f"cannot delete the tenant's directory: {exc.strerror}") from None

    def leftovers(self, tenant_id: str) -> list[str]:
        return [f"directory tenants/{tenant_id}"] if self._root(tenant_id).exists() else []
