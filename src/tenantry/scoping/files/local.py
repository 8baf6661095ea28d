"""Local files: ``<data_dir>/tenants/<id>/files``, walked one component at a time.

Every component is opened relative to its parent's descriptor with ``O_NOFOLLOW``, so a
symlink anywhere in a path (planted by anyone, at any moment) ends the walk instead of
being followed, and there is no window between checking a path and using it.

A listing walks the tree depth first holding at most two descriptors, however deep the tree:
it climbs back up through ``..`` and checks that it arrived at the directory it came from (device
and inode), so a directory moved during the walk ends it instead of leading elsewhere.

Storage usage (bytes and files) lives in a small ledger per tenant,
``<data_dir>/tenants/<id>/files-usage.json``, under an exclusive ``flock``: a write or delete
holds the lock from its quota check until the ledger is updated, so processes sharing the data
dir (replicas, the CLI) serialise one tenant's changes and never pass its quota. The ledger is
marked dirty before a change and clean after it; a lock holder that finds it dirty (its writer
died), unreadable, missing or written before the machine last booted recounts the tree.

The tenant's storage is its ``files`` tree and its command upstreams' working directories
(``<data_dir>/tenants/<id>/upstreams``): a command upstream writes there, or in ``files`` when
given ``{tenant_dir}``, without going through a handle, so the gateway reconciles the ledger with
the disk after each of its calls (:func:`reconcile_usage`). That rescan is bounded in entries and
time; a rescan cut short records what it counted as a *floor*: trusted to refuse a write, never to
admit one (a write the floor would admit recounts the whole tree first).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import json
import os
import stat
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from tenantry.core.errors import NotFound, ScopeViolation, StorageError, TenantryError, UsageError
from tenantry.core.ids import validate_tenant_id
from tenantry.core.limits import TenantLimits
from tenantry.core.paths import join_parts, normalize_prefix
from tenantry.scoping.files.base import FileEntry, FileListing, TextOverBytes
from tenantry.scoping.files.scope import (
    HIDDEN_NAME_PREFIX,
    MAX_LIST_ENTRIES,
    list_limit,
    quota_check,
    resolve_file_path,
    resolve_scoped_path,
    scope_for_listing,
)
from tenantry.scoping.threads import ThreadBulkheads, default_bulkheads

__all__ = [
    "LocalFileScopes",
    "LocalFileHandle",
    "ScanBounds",
    "TenantUsage",
    "tenant_files_root",
    "tenant_upstreams_root",
    "resolve_scoped_path",
    "reconcile_usage",
    "recorded_usage",
    "USAGE_LEDGER",
]

_T = TypeVar("_T")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
USAGE_LEDGER = "files-usage.json"
"""Beside the tenant's ``files`` directory, so no tool path can reach it."""
_LEDGER_COUNTS = "files+directories"
"""What a ledger's ``files`` counts; a ledger of an older rule is recounted."""


def tenant_files_root(data_dir: Path, tenant_id: str) -> Path:
    return data_dir / "tenants" / validate_tenant_id(tenant_id) / "files"


def tenant_upstreams_root(files_root: Path) -> Path:
    """Where the tenant's command upstreams get their working directories (beside ``files``)."""
    return files_root.parent / "upstreams"


@dataclass(frozen=True, slots=True)
class TenantUsage:
    """What a tenant stores: bytes, and regular files and directories (``files``), of its ``files``
    tree and its upstreams' working directories. ``floor`` when a bounded rescan stopped early: the
    real usage is at least this."""

    bytes: int
    files: int
    floor: bool = False


@dataclass(frozen=True, slots=True)
class ScanBounds:
    """How far one reconciling rescan may go before it stops and records a floor.

    It also stops once the usage it has counted passes ``limits`` (the tenant is over its quota
    then, and a floor refuses as well as the exact figure would).
    """

    entries: int = 200_000
    """Directory entries looked at (files, directories, anything else)."""
    seconds: float = 2.0
    """Wall time, checked at every entry and directory."""


def reconcile_usage(
    data_dir: Path, tenant_id: str, limits: TenantLimits, bounds: ScanBounds = ScanBounds()
) -> TenantUsage:
    """Rescan the tenant's storage (bounded) and record it in its ledger, under the ledger's lock
    (blocking; serialises with every handle's writes, across processes).

    :raises StorageError: the ledger cannot be opened or written.
    """
    root = tenant_files_root(data_dir, tenant_id)
    with _Ledger(root.parent / USAGE_LEDGER, lambda: _recount(root), recount_on_open=False) as ledger:
        usage = _scan_usage(root, _Budget(bounds, limits))
        ledger.commit(usage.bytes, usage.files, floor=usage.floor)
        return usage


def recorded_usage(
    data_dir: Path, tenant_id: str, limits: TenantLimits, bounds: ScanBounds = ScanBounds()
) -> TenantUsage:
    """The ledger's figure; a missing, dirty or stale ledger is reconciled first (bounded).

    :raises StorageError: the ledger cannot be opened or written.
    """
    root = tenant_files_root(data_dir, tenant_id)
    with _Ledger(root.parent / USAGE_LEDGER, lambda: _recount(root), recount_on_open=False) as ledger:
        if ledger.stale:
            usage = _scan_usage(root, _Budget(bounds, limits))
            ledger.commit(usage.bytes, usage.files, floor=usage.floor)
            return usage
        return TenantUsage(ledger.bytes, ledger.files, ledger.floor)


class LocalFileScopes:
    """:param bulkheads: the per-tenant thread capacity, and each tenant's limits (quotas)."""

    def __init__(
        self, data_dir: Path, *, max_file_bytes: int = 10 * 1024 * 1024, bulkheads: ThreadBulkheads | None = None
    ) -> None:
        self._data_dir = data_dir
        self.max_file_bytes = max_file_bytes
        self.bulkheads = bulkheads or default_bulkheads()

    def for_tenant(self, tenant_id: str, *, prefix: str | None = None) -> LocalFileHandle:
        return LocalFileHandle(
            tenant_files_root(self._data_dir, tenant_id), prefix=prefix, scopes=self, tenant_id=tenant_id
        )

    def usage(self, tenant_id: str) -> tuple[int, int]:
        """``(bytes, files)`` the tenant stores (blocking; recounts if the ledger needs it)."""
        root = tenant_files_root(self._data_dir, tenant_id)
        with _Ledger(root.parent / USAGE_LEDGER, lambda: _recount(root)) as ledger:
            if ledger.floor:
                ledger.recount()
            return ledger.bytes, ledger.files


class LocalFileHandle(TextOverBytes):
    """``ctx.files`` on the local filesystem. See :class:`~tenantry.scoping.files.base.FileHandle`."""

    def __init__(self, root: Path, *, prefix: str | None, scopes: LocalFileScopes, tenant_id: str) -> None:
        self._root = root
        self._prefix = normalize_prefix(prefix) if prefix else None
        self._scopes = scopes
        self._tenant_id = tenant_id

    async def list(self, prefix: str = "", *, limit: int = MAX_LIST_ENTRIES) -> FileListing:
        parts = self._scope_for_listing(prefix)
        limit = list_limit(limit)
        return await self._offload(lambda: self._list_sync(parts, limit))

    async def read_bytes(self, path: str) -> bytes:
        parts = self._file_parts(path)
        return await self._offload(lambda: self._read_sync(parts))

    async def write_bytes(self, path: str, data: bytes) -> FileEntry:
        parts = self._file_parts(path)
        if len(data) > self._scopes.max_file_bytes:
            raise UsageError(f"file larger than the {self._scopes.max_file_bytes} byte limit")
        limits = self._scopes.bulkheads.limits_for(self._tenant_id)
        return await self._offload(lambda: self._write_sync(parts, data, limits))

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
        return await self._scopes.bulkheads.run(work, tenant_id=self._tenant_id)

    def _ledger(self) -> _Ledger:
        root = self._root
        return _Ledger(root.parent / USAGE_LEDGER, lambda: _recount(root))

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

    def _target(self, parts: tuple[str, ...]) -> tuple[int | None, int]:
        """What a write at ``parts`` finds, in one walk: the size of the regular file there
        (``None``: nothing is there) and how many of its directories do not exist yet.

        :raises ScopeViolation: when something other than a regular file is there.
        """
        try:
            fd = self._open_root(create=False)
        except NotFound:
            return None, len(parts) - 1
        try:
            for depth, part in enumerate(parts[:-1]):
                try:
                    next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    return None, len(parts) - 1 - depth
                except OSError as exc:
                    raise _translate(exc) from None
                os.close(fd)
                fd = next_fd
            try:
                info = os.stat(parts[-1], dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                return None, 0
            except OSError as exc:
                raise _translate(exc) from None
        finally:
            os.close(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ScopeViolation("only regular files can be written")
        return info.st_size, 0

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

    def _write_sync(self, parts: tuple[str, ...], data: bytes, limits: TenantLimits) -> FileEntry:
        with self._ledger() as ledger:
            # Each directory the path needs is an inode (and a block) of the shared disk: counted like a file.
            old_size, new_directories = self._target(parts)

            def check() -> tuple[int, int]:
                return quota_check(
                    used_bytes=ledger.bytes,
                    used_files=ledger.files,
                    old_size=old_size,
                    new_size=len(data),
                    limit_bytes=limits.file_bytes,
                    limit_files=limits.file_count,
                    disclose_usage=self._prefix is None,
                    new_directories=new_directories,
                )

            after = check()
            if ledger.floor:  # a floor may refuse, never admit: the exact figure decides
                ledger.recount()
                after = check()
            ledger.begin()
            entry = self._replace_file(parts, data)
            ledger.commit(*after)
            return entry

    def _replace_file(self, parts: tuple[str, ...], data: bytes) -> FileEntry:
        dir_fd = self._open_dir(parts[:-1], create=True)
        tmp_name = f"{HIDDEN_NAME_PREFIX}{uuid.uuid4().hex}.tmp"
        try:
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
        with self._ledger() as ledger:
            try:
                dir_fd = self._open_dir(parts[:-1], create=False)
            except NotFound:
                return False
            try:
                info = os.stat(parts[-1], dir_fd=dir_fd, follow_symlinks=False)
                if stat.S_ISDIR(info.st_mode):
                    raise ScopeViolation("only files can be deleted")
                ledger.begin()
                os.unlink(parts[-1], dir_fd=dir_fd)
                removed = self._remove_emptied(parts[:-1])
                regular = stat.S_ISREG(info.st_mode)
                ledger.commit(
                    max(ledger.bytes - (info.st_size if regular else 0), 0),
                    max(ledger.files - (1 if regular else 0) - removed, 0),
                    floor=ledger.floor,
                )
                return True
            except FileNotFoundError:
                return False
            except OSError as exc:
                raise _translate(exc) from None
            finally:
                os.close(dir_fd)

    def _remove_emptied(self, parts: tuple[str, ...]) -> int:
        """Remove the directories above a deleted file that it left empty, deepest first (under the
        ledger's lock, so no write is creating a file in them); returns how many. Each counts
        against ``file_count`` like a file, and is given back here. One walk down, then up through
        ``..`` (checked against the directory just left), so a deep path costs its depth in system
        calls, not its square."""
        try:
            fd = self._open_dir(parts, create=False)
        except TenantryError:
            return 0
        removed = 0
        try:
            for name in reversed(parts):
                here = os.fstat(fd)
                parent_fd = os.open("..", _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = parent_fd
                try:
                    info = os.stat(name, dir_fd=fd, follow_symlinks=False)
                    if (info.st_dev, info.st_ino) != (here.st_dev, here.st_ino):
                        return removed  # moved meanwhile: leave it
                    os.rmdir(name, dir_fd=fd)
                except OSError:
                    return removed  # not empty (or gone): nothing above it is empty either
                removed += 1
            return removed
        except OSError:
            return removed
        finally:
            os.close(fd)

    def _list_sync(self, parts: tuple[str, ...], limit: int) -> FileListing:
        try:
            top_fd = self._open_dir(parts, create=False)
        except NotFound:
            return FileListing(limit=limit)
        entries: list[FileEntry] = []
        for rel, name, info in _walk(top_fd):
            if name.startswith(HIDDEN_NAME_PREFIX) or not stat.S_ISREG(info.st_mode):
                continue  # our own temporary files; symlinks, sockets and devices are never listed
            if len(entries) == limit:
                return FileListing(entries, truncated=True, limit=limit)
            entries.append(FileEntry(join_parts(parts + rel + (name,)), info.st_size, info.st_mtime))
        return FileListing(entries, limit=limit)


def _walk(
    top_fd: int, on_directory: Callable[[int], None] | None = None
) -> Iterator[tuple[tuple[str, ...], str, os.stat_result]]:
    """Every non-directory entry under ``top_fd`` as ``(directory parts, name, lstat)``, in the
    order of the full paths as strings. Takes ownership of ``top_fd`` (closed at the end).
    ``on_directory`` is called with its depth (the top's is 0) before each directory is read (it
    may raise to stop the walk).

    At most two descriptors are open at any time: the current directory's, and briefly the next
    one's. Climbing back up goes through ``..``, checked against the device and inode recorded on
    the way down.

    :raises StorageError: when a directory moved during the walk.
    """
    fd = top_fd
    rel: list[str] = []
    # Per level entered: the directory's identity and what is left of it, last item first.
    identities: list[tuple[int, int]] = []
    pending: list[list[tuple[str, os.stat_result | None]]] = []
    try:
        while True:
            if len(pending) == len(rel):  # just entered a directory: read it whole
                if on_directory is not None:
                    on_directory(len(rel))
                info = os.fstat(fd)
                identities.append((info.st_dev, info.st_ino))
                pending.append(_read_directory(fd))
            items = pending[-1]
            if items:
                name, entry_info = items.pop()
                if entry_info is not None:
                    yield tuple(rel), name, entry_info
                    continue
                try:
                    next_fd = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    continue  # removed since it was read
                except OSError as exc:
                    raise _translate(exc) from None
                os.close(fd)
                fd = next_fd
                rel.append(name)
                continue
            pending.pop()
            identities.pop()
            if not rel:
                return
            rel.pop()
            parent_fd = os.open("..", _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = parent_fd
            info = os.fstat(fd)
            if (info.st_dev, info.st_ino) != identities[-1]:
                raise StorageError("a directory moved while it was listed; list again")
    finally:
        os.close(fd)


def _read_directory(fd: int) -> list[tuple[str, os.stat_result | None]]:
    """The entries of directory ``fd``: ``(name, lstat)`` for non-directories, ``(name, None)`` for
    subdirectories, in reverse full-path order (a subdirectory sorts as ``name/``, so "a-b" < "a/x" < "a0")."""
    found: list[tuple[str, str, os.stat_result | None]] = []
    with os.scandir(fd) as scan:
        for entry in scan:
            try:
                info = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(info.st_mode):
                found.append((entry.name + "/", entry.name, None))
            else:
                found.append((entry.name, entry.name, info))
    found.sort(key=lambda item: item[0], reverse=True)
    return [(name, info) for _key, name, info in found]


def _recount(root: Path) -> tuple[int, int]:
    """``(bytes, files)`` of the tenant's storage (see :func:`_scan_usage`), every entry counted."""
    usage = _scan_usage(root, None)
    return usage.bytes, usage.files


class _ScanStopped(Exception):
    """A bounded rescan reached one of its bounds."""


class _Budget:
    def __init__(self, bounds: ScanBounds, limits: TenantLimits) -> None:
        self._entries_left = bounds.entries
        self._deadline = time.monotonic() + bounds.seconds
        self._limits = limits

    def spend(self, used_bytes: int = 0, used_files: int = 0) -> None:
        """:raises _ScanStopped: a bound is reached, or the usage counted so far passes a limit."""
        self._entries_left -= 1
        if (
            self._entries_left < 0
            or time.monotonic() > self._deadline
            or used_bytes > self._limits.file_bytes
            or used_files > self._limits.file_count
        ):
            raise _ScanStopped


class _Tally:
    """What a scan has counted so far, checked against its budget at every entry."""

    def __init__(self, budget: _Budget | None) -> None:
        self.bytes = 0
        self.files = 0
        self._budget = budget

    def spend(self) -> None:
        if self._budget is not None:
            self._budget.spend(self.bytes, self.files)

    def directories(self, *, below: int | None) -> Callable[[int], None]:
        """The walk's ``on_directory`` for one tree: each directory deeper than ``below`` counts as
        an entry (none when ``None``)."""

        def entered(depth: int) -> None:
            if below is not None and depth > below:
                self.files += 1
            self.spend()

        return entered


def _scan_usage(root: Path, budget: _Budget | None) -> TenantUsage:
    """The regular files and directories under ``root`` (the tenant's ``files``) and every entry
    (file, directory, link, fifo) under its upstreams' working directories, never following a
    symlink; ``floor`` when ``budget`` stopped the scan (or a directory moved during it). Each
    is an inode of the shared disk: a directory counts like a file (``ctx.files`` makes them for
    the files in them and removes those it empties; an upstream makes what it likes).
    Leftover temporary files under ``root`` (of a writer that died: every writer holds the ledger
    lock while its file exists) are removed on the way and not counted; an upstream that names
    its files so loses them rather than hiding them.

    :raises StorageError: a tree cannot be opened.
    """
    tally = _Tally(budget)
    orphans: list[tuple[str, ...]] = []
    complete = True
    try:
        for tree in (root, tenant_upstreams_root(root)):
            upstream = tree is not root
            try:
                top_fd = os.open(tree, _DIR_FLAGS)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise _translate(exc) from None
            # Below ``upstreams/<name>/``, the working directory Tenantry made for each upstream.
            for rel, name, info in _walk(top_fd, tally.directories(below=1 if upstream else 0)):
                tally.spend()
                if not upstream and name.startswith(HIDDEN_NAME_PREFIX):
                    orphans.append((*rel, name))
                elif stat.S_ISREG(info.st_mode):
                    tally.bytes += info.st_size
                    tally.files += 1
                elif upstream:
                    tally.files += 1
    except _ScanStopped:
        complete = False
    except StorageError:
        if budget is None:
            raise  # an exact recount that cannot finish is not a figure
        complete = False  # a directory moved during the walk: what was counted is still a floor
    for parts in orphans:
        with contextlib.suppress(OSError):
            _unlink_below(root, parts)
    return TenantUsage(tally.bytes, tally.files, floor=not complete)


def _unlink_below(root: Path, parts: tuple[str, ...]) -> None:
    fd = os.open(root, _DIR_FLAGS)
    try:
        for part in parts[:-1]:
            next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = next_fd
        os.unlink(parts[-1], dir_fd=fd)
    finally:
        os.close(fd)


class _Ledger:
    """One tenant's stored bytes and files, read and written under an exclusive ``flock``.

    Use as a context manager (blocking). Between :meth:`begin` and :meth:`commit` the file says
    ``dirty``; if the holder dies there, the next holder recounts. ``floor``: the figures are a
    lower bound (a bounded rescan stopped early).

    :param recount_on_open: recount a dirty, stale or missing record on entering; else leave it
        to the holder (``stale`` says so, the figures are zero).
    """

    def __init__(self, path: Path, recount: Callable[[], tuple[int, int]], *, recount_on_open: bool = True) -> None:
        self._path = path
        self._recount = recount
        self._recount_on_open = recount_on_open
        self._fd = -1
        self.bytes = 0
        self.files = 0
        self.floor = False
        self.stale = False

    def __enter__(self) -> _Ledger:
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise _translate(exc) from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            recorded = self._read()
            if recorded is None:
                if self._recount_on_open:
                    self.recount()
                else:
                    self.stale = True
            else:
                self.bytes, self.files, self.floor = recorded
        except BaseException:
            os.close(self._fd)
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        os.close(self._fd)  # releases the lock

    def begin(self) -> None:
        self._write("dirty")

    def commit(self, used_bytes: int, used_files: int, *, floor: bool = False) -> None:
        self.bytes, self.files, self.floor = used_bytes, used_files, floor
        self.stale = False
        self._write("clean")

    def recount(self) -> None:
        """The exact figure from a full recount of the tree, recorded."""
        self.commit(*self._recount())

    def _read(self) -> tuple[int, int, bool] | None:
        try:
            record = json.loads(os.pread(self._fd, 4096, 0) or b"null")
        except (ValueError, OSError):
            return None
        if not isinstance(record, dict) or record.get("state") != "clean" or record.get("boot") != _boot_id():
            return None
        if record.get("counts") != _LEDGER_COUNTS:  # written when directories did not count: recount
            return None
        used_bytes, used_files = record.get("bytes"), record.get("files")
        if not (isinstance(used_bytes, int) and isinstance(used_files, int)) or used_bytes < 0 or used_files < 0:
            return None
        return used_bytes, used_files, record.get("floor") is True

    def _write(self, state: str) -> None:
        record: dict[str, object] = {
            "bytes": self.bytes,
            "files": self.files,
            "state": state,
            "boot": _boot_id(),
            "counts": _LEDGER_COUNTS,
        }
        if self.floor:
            record["floor"] = True
        data = json.dumps(record).encode()
        try:
            os.pwrite(self._fd, data, 0)
            os.ftruncate(self._fd, len(data))
        except OSError as exc:
            raise _translate(exc) from None


@functools.cache
def _boot_id() -> str:
    """Identifies this boot of the machine: a ledger written before a power loss may have lost its
    last update (it is not fsync'd), so it is recounted."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


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
