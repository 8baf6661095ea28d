"""The export bundle: a directory of parts, each listed with its size and SHA-256 in ``manifest.json``.

Parts are written as streams (rows, file chunks), so a bundle of any size is made in bounded
memory. The bundle is built under ``PATH.partial`` and renamed to ``PATH`` once complete, so a
bundle at ``PATH`` is always whole; an existing ``PATH`` is never overwritten.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tenantry.core.errors import UsageError

__all__ = ["BUNDLE_FORMAT", "MANIFEST", "Bundle", "PartWriter", "jsonable", "file_sha256"]

BUNDLE_FORMAT = "tenantry-tenant-export/1"
MANIFEST = "manifest.json"
_CHUNK = 1 << 20


def jsonable(value: Any) -> Any:
    """``value`` as JSON can hold it: bytes become ``{"base64": ...}``."""
    if isinstance(value, bytes | bytearray | memoryview):
        return {"base64": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def file_sha256(path: Path) -> tuple[int, str]:
    """``(size, "sha256:...")`` of a file, read in chunks."""
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, "sha256:" + digest.hexdigest()


class PartWriter:
    """One part being written: counts and hashes every byte on its way to disk."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle
        self._digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self._handle.write(data)
        self._digest.update(data)
        self.size += len(data)

    @property
    def sha256(self) -> str:
        return "sha256:" + self._digest.hexdigest()


class Bundle:
    """A bundle under construction at ``final.partial``; :meth:`finish` moves it to ``final``.

    :param outside: a directory the bundle must not be written into (the data directory: a bundle
        under another tenant's file root would be readable by that tenant's tools).
    :raises UsageError: ``final`` (or its partial sibling) already exists, its parent is missing,
        or it lies inside ``outside``.
    """

    def __init__(self, final: Path, *, outside: Path | None = None) -> None:
        if outside is not None and final.resolve().is_relative_to(outside.resolve()):
            raise UsageError(
                f"cannot write {final}: it is inside the data directory {outside}, where the"
                " server's stores (and tenants' own files) live; choose an --out outside it"
            )
        self.final = final
        self.root = final.with_name(final.name + ".partial")
        if final.exists() or final.is_symlink():
            raise UsageError(f"{final} already exists; refusing to overwrite it (choose another --out)")
        if not final.parent.is_dir():
            raise UsageError(f"cannot write {final}: {final.parent} is not a directory")
        if self.root.exists():
            raise UsageError(f"{self.root} exists (an interrupted export?); remove it first")
        self.root.mkdir(mode=0o700)
        self.parts: list[dict[str, Any]] = []

    def path_of(self, relative: str) -> Path:
        """Where part ``relative`` (``/``-separated, no ``..``) lives, its directories made.

        :raises UsageError: a path that would leave the bundle.
        """
        parts = relative.split("/")
        if any(p in ("", ".", "..") or "\x00" in p for p in parts):
            raise UsageError(f"invalid bundle path {relative!r}")
        path = self.root.joinpath(*parts)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        return path

    @contextmanager
    def part(self, relative: str, store: str) -> Iterator[PartWriter]:
        """A new part, recorded in the manifest once the block ends."""
        path = self.path_of(relative)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb", buffering=_CHUNK) as handle:
            writer = PartWriter(handle)
            yield writer
        self.parts.append({"path": relative, "store": store, "bytes": writer.size, "sha256": writer.sha256})

    def write_jsonl(self, relative: str, store: str, rows: Iterable[Mapping[str, Any]]) -> int:
        """A JSON Lines part from ``rows`` (consumed one at a time); returns how many."""
        count = 0
        with self.part(relative, store) as out:
            for row in rows:
                out.write(json.dumps(jsonable(row), ensure_ascii=False, sort_keys=True).encode() + b"\n")
                count += 1
        return count

    def write_json(self, relative: str, store: str, value: Any) -> None:
        with self.part(relative, store) as out:
            out.write(json.dumps(jsonable(value), ensure_ascii=False, indent=2, sort_keys=True).encode() + b"\n")

    def record(self, relative: str, store: str) -> None:
        """List a part someone else wrote at :meth:`path_of` ``(relative)``."""
        size, sha = file_sha256(self.root / relative)
        self.parts.append({"path": relative, "store": store, "bytes": size, "sha256": sha})

    def finish(self, manifest: Mapping[str, Any]) -> str:
        """Write ``manifest.json`` (``manifest`` plus the parts) and move the bundle into place;
        returns the manifest's SHA-256."""
        document = {"format": BUNDLE_FORMAT, **manifest, "parts": sorted(self.parts, key=lambda p: p["path"])}
        data = json.dumps(document, ensure_ascii=False, indent=2, sort_keys=True).encode() + b"\n"
        with (self.root / MANIFEST).open("xb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if self.final.exists():
            raise UsageError(f"{self.final} appeared while exporting; the bundle is left at {self.root}")
        self.root.rename(self.final)
        return "sha256:" + hashlib.sha256(data).hexdigest()

    def abandon(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
