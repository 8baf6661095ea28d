"""Path rules every file backend shares: which paths a handle may touch and list.

Pure functions over :mod:`tenantry.core.paths`; a backend maps the resulting components
onto its own storage (directory descriptors, object keys).
"""

from __future__ import annotations

from tenantry.core.errors import ScopeViolation
from tenantry.core.paths import PathRejected, normalize_path, within_prefix

__all__ = ["MAX_LIST_ENTRIES", "HIDDEN_NAME_PREFIX", "resolve_scoped_path", "resolve_file_path", "scope_for_listing"]

MAX_LIST_ENTRIES = 10_000
"""A listing longer than this is refused; the caller lists a narrower prefix."""
HIDDEN_NAME_PREFIX = ".tenantry-"
"""Names the backends use for their own temporary files; never listed."""


def resolve_scoped_path(path: str, prefix: str | None) -> tuple[str, ...]:
    """Validate ``path`` and check it lies inside ``prefix``.

    :raises ScopeViolation: naming the broken rule.
    """
    try:
        parts = normalize_path(path)
    except PathRejected as exc:
        raise ScopeViolation(exc.reason) from None
    if not within_prefix(parts, prefix):
        raise ScopeViolation("path is outside the prefix this credential may access")
    return parts


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
    if not prefix:
        return parts
    allowed = tuple(prefix.split("/"))
    if within_prefix(parts, prefix):
        return parts
    if allowed[: len(parts)] == parts:
        return allowed
    raise ScopeViolation("path is outside the prefix this credential may access")
