"""Normalising resource paths that name something inside a tenant's partition.

A resource path is relative, ``/``-separated and plain: no ``..``, no absolute paths or
drive letters, no backslashes, no NUL or control characters, no percent-encoded
separators or dots, and no Unicode look-alikes that normalise into any of those. The
result is a tuple of components, compared component-wise so that ``acme`` never
matches ``acme-evil``. Pure functions; the file adapters add the I/O-level defences
(``O_NOFOLLOW`` on every component).
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["PathRejected", "normalize_path", "normalize_prefix", "within_prefix", "join_parts", "MAX_PATH_LENGTH"]

MAX_PATH_LENGTH = 1024
_MAX_COMPONENT = 255
_ENCODED = re.compile(r"%(?:2e|2f|5c|00|25)", re.IGNORECASE)
_DRIVE = re.compile(r"^[A-Za-z]:")


class PathRejected(ValueError):
    """The path cannot name anything inside the tenant's partition; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def _check_text(path: str) -> None:
    if len(path) > MAX_PATH_LENGTH:
        raise PathRejected(f"path longer than {MAX_PATH_LENGTH} characters")
    if "\x00" in path:
        raise PathRejected("path contains a NUL byte")
    if any(unicodedata.category(ch) == "Cc" for ch in path):
        raise PathRejected("path contains control characters")
    if "\\" in path:
        raise PathRejected("backslashes are not allowed in paths")
    if _ENCODED.search(path):
        raise PathRejected("percent-encoded separators, dots or escapes are not allowed in paths")
    if path.startswith("/") or _DRIVE.match(path) or path.startswith("~"):
        raise PathRejected("absolute paths are not allowed; paths are relative to the tenant's root")


def normalize_path(path: str) -> tuple[str, ...]:
    """Split ``path`` into safe components (``""`` and ``"."`` are dropped).

    :raises PathRejected: naming the first rule the path breaks.
    """
    if not isinstance(path, str):
        raise PathRejected("path must be a string")
    _check_text(path)
    folded = unicodedata.normalize("NFKC", path)
    if folded != path:
        # A look-alike (fullwidth solidus, one-dot leader, ...) must not become a separator later.
        _check_text(folded)
        if folded.split("/") != path.split("/") or ".." in folded.split("/"):
            raise PathRejected("path contains characters that normalise into separators or dots")
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            raise PathRejected("'..' is not allowed in paths")
        if len(part.encode()) > _MAX_COMPONENT:
            raise PathRejected(f"path component longer than {_MAX_COMPONENT} bytes")
        parts.append(part)
    return tuple(parts)


def normalize_prefix(prefix: str) -> str:
    """Canonical text form of a resource prefix (``"reports/2026"``; ``""`` for the whole partition)."""
    return "/".join(normalize_path(prefix))


def join_parts(parts: tuple[str, ...]) -> str:
    return "/".join(parts)


def within_prefix(parts: tuple[str, ...], prefix: str | None) -> bool:
    """Whether ``parts`` lies inside ``prefix``, component-wise."""
    if not prefix:
        return True
    prefix_parts = tuple(prefix.split("/"))
    return parts[: len(prefix_parts)] == prefix_parts
