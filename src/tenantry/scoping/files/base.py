"""The tenant-scoped file handle tools receive as ``ctx.files``."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from tenantry.core.errors import UsageError
from tenantry.scoping.files.scope import MAX_LIST_ENTRIES

__all__ = ["FileEntry", "FileHandle", "FileListing", "FileScopes", "TextOverBytes"]


@dataclass(frozen=True, slots=True)
class FileEntry:
    path: str
    """Relative to the tenant's root, ``/``-separated."""
    size: int
    modified: float


class FileListing(list[FileEntry]):
    """The entries of one listing, sorted by path; ``truncated`` when more files matched than ``limit``.

    The first ``limit`` paths in sorted order are returned, so a caller can continue with a
    narrower prefix (or the prefix of the last entry).
    """

    def __init__(self, entries: Iterable[FileEntry] = (), *, truncated: bool = False, limit: int = 0) -> None:
        super().__init__(entries)
        self.truncated = truncated
        self.limit = limit


class FileHandle(Protocol):
    """Files inside one tenant's partition, narrowed further by the credential's ``resource_prefix``.

    Paths are relative to the tenant's root. ``..``, absolute paths, backslashes,
    percent-encoded separators, NUL bytes and symlinks never escape it.

    Stored bytes and files count against the tenant's ``file_bytes``/``file_count`` limits:
    a write beyond them is refused before anything is written; deletes and overwrites give the
    difference back.

    :raises ScopeViolation: for a path that breaks a rule or lies outside the prefix.
    :raises NotFound: for a missing file.
    :raises StorageQuotaExceeded: for a write beyond the tenant's storage quota.
    :raises StorageError: when the storage itself fails.
    """

    async def list(self, prefix: str = "", *, limit: int = MAX_LIST_ENTRIES) -> FileListing:
        """Regular files under ``prefix`` (recursively): the first ``limit`` by path.

        :raises UsageError: for a ``limit`` outside 1 to :data:`MAX_LIST_ENTRIES`.
        """
        ...

    async def read_bytes(self, path: str) -> bytes: ...

    async def read_text(self, path: str) -> str: ...

    async def write_bytes(self, path: str, data: bytes) -> FileEntry: ...

    async def write_text(self, path: str, text: str) -> FileEntry: ...

    async def delete(self, path: str) -> bool:
        """Remove a file; ``False`` if it did not exist."""
        ...


class TextOverBytes(ABC):
    """``read_text``/``write_text`` (UTF-8) for a backend that implements the byte methods."""

    @abstractmethod
    async def read_bytes(self, path: str) -> bytes: ...

    @abstractmethod
    async def write_bytes(self, path: str, data: bytes) -> FileEntry: ...

    async def read_text(self, path: str) -> str:
        data = await self.read_bytes(path)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise UsageError("file is not UTF-8 text; read it as bytes") from None

    async def write_text(self, path: str, text: str) -> FileEntry:
        return await self.write_bytes(path, text.encode("utf-8"))


class FileScopes(Protocol):
    def for_tenant(self, tenant_id: str, *, prefix: str | None = None) -> FileHandle: ...
