"""A byte quota on an embedded SQLite database, as SQLite's own page limit (``max_page_count``).

The limit is set on the connection (it is not stored in the file) and applies to every write:
a statement that needs a page past it fails whole with ``SQLITE_FULL``. A limit below the file's
current size keeps that size, so nothing more is added while deletes still work (freed pages
are reused). The ``-wal`` file is outside the count: :data:`WAL_SIZE_LIMIT` truncates it after a
checkpoint, so it stays above that only until the write after the statement that grew it.
``SQLITE_FULL`` also means a full disk: :func:`full_means_quota` tells them apart.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["page_limit", "full_means_quota", "WAL_SIZE_LIMIT"]

WAL_SIZE_LIMIT = 4 * 1024 * 1024
"""``journal_size_limit`` of a bounded database: the page limit does not count its ``-wal`` file,
which a statement rewriting every page grows to a second copy of the database and which keeps
its size after the checkpoint unless truncated; with this limit it is truncated to about one
autocheckpoint (1,000 pages) at the next write."""


def page_limit(max_bytes: int, page_size: int) -> int:
    """The ``max_page_count`` for ``max_bytes``."""
    return max(1, max_bytes // page_size)


def full_means_quota(database: Path, used_pages: int, max_pages: int, page_size: int) -> bool:
    """Whether a ``SQLITE_FULL`` of ``database`` came from its page limit: the disk still has more
    room than the quota has left (a full disk has next to none)."""
    try:
        disk = os.statvfs(database.parent)
    except OSError:
        return True
    return disk.f_bavail * disk.f_frsize > max(max_pages - used_pages, 0) * page_size
