"""Path rules every file backend shares: which paths a handle may touch and list.

Pure functions over :mod:`tenantry.core.paths`; a backend maps the resulting components
onto its own storage (directory descriptors, object keys).
"""

from __future__ import annotations

from tenantry.core.errors import ScopeViolation, StorageQuotaExceeded, UsageError
from tenantry.core.paths import PathRejected, normalize_path, within_prefix

__all__ = [
    "MAX_LIST_ENTRIES",
    "HIDDEN_NAME_PREFIX",
    "resolve_scoped_path",
    "resolve_file_path",
    "scope_for_listing",
    "list_limit",
    "quota_check",
]

MAX_LIST_ENTRIES = 10_000
"""The most entries one listing returns; a longer one is cut and marked ``truncated``."""
HIDDEN_NAME_PREFIX = ".tenantry-"
"""Names the backends keep for themselves (temporary files, the usage ledger): never listed, and
no path a tool passes may contain a component starting with it."""


def resolve_scoped_path(path: str, prefix: str | None) -> tuple[str, ...]:
    """Validate ``path`` and check it lies inside ``prefix``.

    :raises ScopeViolation: naming the broken rule.
    """
    try:
        parts = normalize_path(path)
    except PathRejected as exc:
        raise ScopeViolation(exc.reason) from None
    _refuse_reserved(parts)
    if not within_prefix(parts, prefix):
        raise ScopeViolation("path is outside the prefix this credential may access")
    return parts


def _refuse_reserved(parts: tuple[str, ...]) -> None:
    if any(part.startswith(HIDDEN_NAME_PREFIX) for part in parts):
        raise ScopeViolation(f"names starting with {HIDDEN_NAME_PREFIX!r} are reserved")


def resolve_file_path(path: str, prefix: str | None) -> tuple[str, ...]:
    """Like :func:`resolve_scoped_path`, but the path must name a file (at least one component).

    :raises ScopeViolation: naming the broken rule.
    """
    parts = resolve_scoped_path(path, prefix)
    if not parts:
        raise ScopeViolation("a file path is required")
    return parts


def scope_for_listing(path: str, prefix: str | None) -> tuple[str, ...]:
    """The components to list for ``path`` under the credential's ``prefix``.

    Listing a parent of the allowed prefix (``""`` included) lists only the allowed prefix.

    :raises ScopeViolation: for a path that breaks a rule or lies beside the prefix.
    """
    try:
        parts = normalize_path(path)
    except PathRejected as exc:
        raise ScopeViolation(exc.reason) from None
    _refuse_reserved(parts)
    if not prefix:
        return parts
    allowed = tuple(prefix.split("/"))
    if within_prefix(parts, prefix):
        return parts
    if allowed[: len(parts)] == parts:
        return allowed
    raise ScopeViolation("path is outside the prefix this credential may access")


def list_limit(limit: int) -> int:
    """``limit`` checked: 1 to :data:`MAX_LIST_ENTRIES`.

    :raises UsageError: for anything else.
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIST_ENTRIES:
        raise UsageError(f"limit must be an integer from 1 to {MAX_LIST_ENTRIES}")
    return limit


def quota_check(
    *,
    used_bytes: int,
    used_files: int,
    old_size: int | None,
    new_size: int,
    limit_bytes: int,
    limit_files: int,
    new_directories: int = 0,
    disclose_usage: bool = True,
) -> tuple[int, int]:
    """The tenant's usage after writing ``new_size`` bytes over a file of ``old_size`` (``None``: new file).

    :param new_directories: directories the write must make for the file (a backend whose
        directories are inodes of a disk counts each like a file).
    :param disclose_usage: the refusal may quote the tenant's usage; not to a credential narrowed
        to a prefix, which would learn what the rest of its tenant stores.

    A write that does not grow the usage is always allowed, so that a tenant over a lowered
    quota can still shrink or delete its way back under it.

    :raises StorageQuotaExceeded: naming the usage and the limit it would pass.
    """
    after_bytes = used_bytes - (old_size or 0) + new_size
    after_files = used_files + (1 if old_size is None else 0) + new_directories
    over_files = after_files > limit_files and after_files > used_files
    over_bytes = after_bytes > limit_bytes and after_bytes > used_bytes
    if not disclose_usage and (over_files or over_bytes):
        raise StorageQuotaExceeded("the tenant's storage quota has no room for this write; delete files first")
    if over_files:
        if new_directories:
            raise StorageQuotaExceeded(
                f"file count quota exceeded: {used_files} of {limit_files} files stored (directories count"
                f" as files), this write needs {after_files - used_files} more; delete files first"
            )
        raise StorageQuotaExceeded(
            f"file count quota exceeded: {used_files} of {limit_files} files stored; delete files first"
        )
    if over_bytes:
        raise StorageQuotaExceeded(
            f"storage quota exceeded: {used_bytes} of {limit_bytes} bytes stored,"
            f" this write needs {after_bytes - used_bytes} more; delete files first"
        )
    return after_bytes, after_files
