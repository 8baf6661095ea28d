"""Local files: ``<data_dir>/tenants/<id>/files``, walked one component at a time.

Every component is opened relative to its parent's descriptor with ``O_NOFOLLOW``, so a
symlink anywhere in a path (planted by anyone, at any moment) ends the walk instead of
being followed, and there is no window between checking a path and using it.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import os
import stat
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import anyio.to_thread

from tenantry.core.errors import NotFound, ScopeViolation, StorageError, UsageError
from tenantry.core.ids import validate_tenant_id
from tenantry.core.paths import join_parts, normalize_prefix
from tenantry.scoping.files.base import FileEntry, TextOverBytes
from tenantry.scoping.files.scope import (
    HIDDEN_NAME_PREFIX,
    MAX_LIST_ENTRIES,
    resolve_file_path,
    resolve_scoped_path,
    scope_for_listing,
)

__all__ = ["LocalFileScopes", "LocalFileHandle", "tenant_files_root", "resolve_scoped_path"]

_T = TypeVar("_T")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_LIST = MAX_LIST_ENTRIES


def tenant_files_root(data_dir: Path, tenant_id: str) -> Path:
    return data_dir / "tenants" / validate_tenant_id(tenant_id) / "files"


class LocalFileScopes:
    def __init__(self, data_dir: Path, *, max_file_bytes: int = 10 * 1024 * 1024) -> None:
        self._data_dir = data_dir
        self.max_file_bytes = max_file_bytes

    def for_tenant(self, tenant_id: str, *, prefix: str | None = None) -> LocalFileHandle:
        return LocalFileHandle(tenant_files_root(self._data_dir, tenant_id), prefix=prefix, scopes=self)


class LocalFileHandle(TextOverBytes):
    """``ctx.files`` on the local filesystem. See :class:`~tenantry.scoping.files.base.FileHandle`."""

    def __init__(self, root: Path, *, prefix: str | None, scopes: LocalFileScopes) -> None:
        self._root = root
        self._prefix = normalize_prefix(prefix) if prefix else None
        self._scopes = scopes

    async def list(self, prefix: str = "") -> list[FileEntry]:
        parts = self._scope_for_listing(prefix)
        return await self._offload(lambda: self._list_sync(parts))

    async def read_bytes(self, path: str) -> bytes:
        parts = self._file_parts(path)
        return await self._offload(lambda: self._read_sync(parts))

    async def write_bytes(self, path: str, data: bytes) -> FileEntry:
        parts = self._file_parts(path)
        if len(data) > self._scopes.max_file_bytes:
            raise UsageError(f"file larger than the {self._scopes.max_file_bytes} byte limit")
        return await self._offload(lambda: self._write_sync(parts, data))

    async def delete(self, path: str) -> bool:
        parts = self._file_parts(path)
        return await self._offload(lambda: self._delete_sync(parts))

    # -- path checks (pure) -------------------------------------------------------------

    def _file_parts(self, path: str) -> tuple[str, ...]:
        return resolve_file_path(path, self._prefix)

    def _scope_for_listing(self, prefix: str) -> tuple[str, ...]:
        return scope_for_listing(prefix, self._prefix)

    # -- I/O (worker thread) ------------------------------------------------------------

    async def _offload(self, work: Callable[[], _T]) -> _T:
        return await anyio.to_thread.run_sync(work)

    def _open_root(self, *, create: bool) -> int:
        if create:
            self._root.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            return os.open(self._root, _DIR_FLAGS)
        except OSError as exc:
            raise _translate(exc) from None

    def _open_dir(self, parts: tuple[str, ...], *, create: bool) -> int:
        fd = self._open_root(create=create)
        try:
            for part in parts:
                try:
                    next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise NotFound("no such file") from None
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(part, 0o700, dir_fd=fd)
                    next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = next_fd
        except OSError as exc:
            os.close(fd)
            raise _translate(exc) from None
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _read_sync(self, parts: tuple[str, ...]) -> bytes:
        dir_fd = self._open_dir(parts[:-1], create=False)
        try:
            fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dir_fd)
        except OSError as exc:
            raise _translate(exc) from None
        finally:
            os.close(dir_fd)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise ScopeViolation("only regular files can be read")
            if info.st_size > self._scopes.max_file_bytes:
                raise UsageError(f"file larger than the {self._scopes.max_file_bytes} byte limit")
            chunks: list[bytes] = []
            remaining = self._scopes.max_file_bytes + 1
            while remaining > 0:
                chunk = os.read(fd, min(remaining, 1 << 20))
                if not chunk:
                    break
                chunks.append(chunk)
                remaining -= len(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def _write_sync(self, parts: tuple[str, ...], data: bytes) -> FileEntry:
        dir_fd = self._open_dir(parts[:-1], create=True)
        tmp_name = f"{HIDDEN_NAME_PREFIX}{uuid.uuid4().hex}.tmp"
        try:
            try:
                existing = os.stat(parts[-1], dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                existing = None
            if existing is not None and not stat.S_ISREG(existing.st_mode):
                raise ScopeViolation("only regular files can be written")
            fd = os.open(
                tmp_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd
            )
            try:
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp_name, parts[-1], src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            info = os.stat(parts[-1], dir_fd=dir_fd, follow_symlinks=False)
            return FileEntry(path=join_parts(parts), size=info.st_size, modified=info.st_mtime)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name, dir_fd=dir_fd)
            raise _translate(exc) from None
        finally:
            os.close(dir_fd)

    def _delete_sync(self, parts: tuple[str, ...]) -> bool:
        try:
            dir_fd = self._open_dir(parts[:-1], create=False)
        except NotFound:
            return False
        try:
            info = os.stat(parts[-1], dir_fd=dir_fd, follow_symlinks=False)
            if stat.S_ISDIR(info.st_mode):
                raise ScopeViolation("only files can be deleted")
            os.unlink(parts[-1], dir_fd=dir_fd)
            return True
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise _translate(exc) from None
        finally:
            os.close(dir_fd)

    def _list_sync(self, parts: tuple[str, ...]) -> builtins.list[FileEntry]:
        try:
            top_fd = self._open_dir(parts, create=False)
        except NotFound:
            return []
        entries: list[FileEntry] = []
        try:
            for dirpath, _dirnames, filenames, dir_fd in os.fwalk(".", dir_fd=top_fd, follow_symlinks=False):
                rel = tuple(p for p in dirpath.split("/") if p not in ("", "."))
                for name in filenames:
                    if name.startswith(HIDDEN_NAME_PREFIX):
                        continue
                    info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                    if not stat.S_ISREG(info.st_mode):
                        continue  # symlinks, sockets and devices are never listed
                    entries.append(FileEntry(join_parts(parts + rel + (name,)), info.st_size, info.st_mtime))
                    if len(entries) > _MAX_LIST:
                        raise UsageError(f"more than {_MAX_LIST} files; list a narrower prefix")
        finally:
            os.close(top_fd)
        return sorted(entries, key=lambda e: e.path)


def _translate(exc: OSError) -> Exception:
    if exc.errno in (errno.ELOOP, errno.EMLINK):
        return ScopeViolation("symlinks are not followed")
    if exc.errno == errno.ENOTDIR:
        return ScopeViolation("a path component is not a directory (symlinks are not followed)")
    if exc.errno == errno.ENOENT:
        return NotFound("no such file")
    if exc.errno == errno.EISDIR:
        return UsageError("path is a directory")
    return StorageError(f"file storage error ({errno.errorcode.get(exc.errno or 0, exc.errno)})")
