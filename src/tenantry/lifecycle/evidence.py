"""The evidence log of exports and deletions: ``<data_dir>/evidence/lifecycle.jsonl``.

One JSON object per line, appended when an export or a deletion completes::

    {"kind": "export" | "deletion", "tenant": ID, "at": ISO 8601 UTC, "by": ACTOR,
     "stores": [STORE, ...], "certificate": DIGEST | PATH}

``certificate`` is the SHA-256 of the bundle's ``manifest.json`` for an export, and the path
(relative to the data dir) of the signed deletion certificate for a deletion. ``tenantry
compliance report`` reads this file; nothing in it is a secret or a tenant's data.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

__all__ = ["EVIDENCE_DIR", "EVIDENCE_LOG", "evidence_log", "append_evidence", "read_evidence", "utc_iso"]

EVIDENCE_DIR = "evidence"
EVIDENCE_LOG = "lifecycle.jsonl"


def utc_iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def evidence_log(data_dir: Path) -> Path:
    return data_dir / EVIDENCE_DIR / EVIDENCE_LOG


def append_evidence(
    data_dir: Path,
    *,
    kind: Literal["export", "deletion"],
    tenant: str,
    at: float,
    by: str,
    stores: list[str],
    certificate: str,
) -> dict[str, Any]:
    """Append one line (durably: written whole with ``O_APPEND``, then fsynced); returns it."""
    line = {"kind": kind, "tenant": tenant, "at": utc_iso(at), "by": by, "stores": stores, "certificate": certificate}
    path = evidence_log(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, (json.dumps(line, sort_keys=True) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return line


def read_evidence(data_dir: Path) -> Iterator[dict[str, Any]]:
    """Every line of the log, oldest first (a line cut short by a crash is skipped)."""
    path = evidence_log(data_dir)
    if not path.is_file():
        return
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict):
                yield entry
