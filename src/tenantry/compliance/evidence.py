"""The evidence directory, ``<data_dir>/evidence/``: what the report reads besides the stores.

- ``probe-<UTC timestamp>-<nonce>.json``: one ``tenantry probe`` run each (written with
  ``--data-dir``); its ``sha256`` field covers the rest of the file, so an edited run is
  recognised and not taken as evidence.
- ``lifecycle.jsonl``: one line per tenant export or deletion (``kind``, ``tenant``, ``at``,
  ``by``, ``stores``, ``certificate``), appended by ``tenant export`` / ``tenant delete``.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tenantry.core.errors import StorageError

__all__ = [
    "EVIDENCE_DIR",
    "LIFECYCLE_FILE",
    "ProbeEvidence",
    "LifecycleEvent",
    "evidence_dir",
    "store_probe_run",
    "probe_runs",
    "lifecycle_events",
    "parse_time",
]

EVIDENCE_DIR = "evidence"
LIFECYCLE_FILE = "lifecycle.jsonl"
_PROBE_FORMAT = "tenantry-probe/1"


def evidence_dir(data_dir: Path) -> Path:
    return data_dir.resolve() / EVIDENCE_DIR


def parse_time(value: Any) -> datetime | None:
    """An ISO 8601 time (``Z`` or an offset) as an aware UTC datetime; ``None`` if it is not one."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _digest(body: dict[str, Any]) -> str:
    rest = {k: v for k, v in body.items() if k != "sha256"}
    return hashlib.sha256(json.dumps(rest, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def store_probe_run(data_dir: Path, body: dict[str, Any]) -> Path:
    """Write one probe run (as made by :meth:`ProbeRun.to_json`) into the evidence dir, 0600,
    never over an earlier one.

    :raises StorageError: the evidence dir cannot be written.
    """
    folder = evidence_dir(data_dir)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = folder / f"probe-{stamp}-{secrets.token_hex(3)}.json"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(json.dumps(body, indent=2, sort_keys=True) + "\n")
    except OSError as exc:
        raise StorageError(f"cannot store the probe run in {folder}: {exc.strerror}") from None
    return path


@dataclass(frozen=True)
class ProbeEvidence:
    path: Path
    body: dict[str, Any]
    intact: bool
    """The file's ``sha256`` matches its content."""

    @property
    def at(self) -> datetime | None:
        return parse_time(self.body.get("finished")) or parse_time(self.body.get("started"))

    @property
    def passed(self) -> bool:
        return self.intact and self.body.get("result") == "pass"

    def check(self, check_id: str) -> dict[str, Any] | None:
        return next((c for c in self.body.get("checks", []) if c.get("id") == check_id), None)

    def checks(self, group: str) -> list[dict[str, Any]]:
        return [c for c in self.body.get("checks", []) if c.get("group") == group]


def probe_runs(data_dir: Path) -> list[ProbeEvidence]:
    """Every stored probe run, newest first (files that are not probe runs are skipped)."""
    folder = evidence_dir(data_dir)
    found: list[ProbeEvidence] = []
    for path in sorted(folder.glob("probe-*.json")) if folder.is_dir() else []:
        try:
            body = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(body, dict) or body.get("format") != _PROBE_FORMAT:
            continue
        found.append(ProbeEvidence(path, body, body.get("sha256") == _digest(body)))
    far_past = datetime.min.replace(tzinfo=UTC)
    return sorted(found, key=lambda e: e.at or far_past, reverse=True)


@dataclass(frozen=True)
class LifecycleEvent:
    kind: str
    tenant: str
    at: datetime
    by: str
    stores: tuple[str, ...]
    certificate: str | None
    """An export's manifest digest; a deletion's certificate path (relative to the data dir)."""
    certificate_found: bool | None = None
    """For a deletion: whether the certificate file is there (``None`` when none is named)."""


def _event(line: str, data_dir: Path) -> LifecycleEvent | None:
    try:
        item = json.loads(line)
    except ValueError:
        return None
    if not isinstance(item, dict):
        return None
    at = parse_time(item.get("at"))
    if at is None or item.get("kind") not in ("export", "deletion") or not isinstance(item.get("tenant"), str):
        return None
    stores = item["stores"] if isinstance(item.get("stores"), list) else []
    certificate = item.get("certificate") if isinstance(item.get("certificate"), str) else None
    found = None
    if item["kind"] == "deletion" and certificate:
        target = (data_dir.resolve() / certificate).resolve()
        found = target.is_relative_to(data_dir.resolve()) and target.is_file()
    return LifecycleEvent(
        kind=item["kind"],
        tenant=item["tenant"],
        at=at,
        by=str(item.get("by", "unknown")),
        stores=tuple(str(s) for s in stores),
        certificate=certificate or None,
        certificate_found=found,
    )


def lifecycle_events(data_dir: Path) -> tuple[list[LifecycleEvent], int]:
    """Exports and deletions recorded in ``lifecycle.jsonl`` (oldest first), and how many of
    its lines could not be read as one (reported, never silently dropped)."""
    path = evidence_dir(data_dir) / LIFECYCLE_FILE
    if not path.is_file():
        return [], 0
    text = path.read_text(encoding="utf-8", errors="replace")
    # Lines are appended whole and fsynced: only a crash mid-write leaves a last line without
    # its newline, and that export or deletion did not complete. Any other bad line is a gap.
    events: list[LifecycleEvent] = []
    unreadable = 0
    for line in text.split("\n")[:-1]:
        if not line.strip():
            continue
        event = _event(line, data_dir)
        if event is None:
            unreadable += 1
        else:
            events.append(event)
    return sorted(events, key=lambda e: e.at), unreadable
