"""A local, fsync'd file for audit records the store could not take.

When the audit store fails, the events that describe things that already happened (a
refusal, a tool that ran) are appended here and flushed to disk, so a restart during the
outage loses none of them; the next process (or this one, once the store is back) writes
them to the store and empties the file. Every access holds an exclusive ``flock``, so
several processes on one data dir never write the same record twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from tenantry.audit.events import AuditEvent

__all__ = ["SpillFile"]

logger = logging.getLogger(__name__)

_FIELDS = tuple(f.name for f in fields(AuditEvent) if f.name != "principal")


def _line(event: AuditEvent) -> bytes:
    return json.dumps({name: getattr(event, name) for name in _FIELDS}, separators=(",", ":")).encode() + b"\n"


def _event(line: bytes) -> AuditEvent | None:
    try:
        values: dict[str, Any] = json.loads(line)
        return AuditEvent(**{name: values[name] for name in _FIELDS if name in values})
    except (ValueError, TypeError, KeyError):
        return None


class SpillFile:
    def __init__(self, path: Path) -> None:
        self._path = path

    @property
    def path(self) -> Path:
        return self._path

    @contextlib.contextmanager
    def _locked(self) -> Iterator[int]:
        self._path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield fd
        finally:
            os.close(fd)

    def append(self, events: Sequence[AuditEvent]) -> None:
        """Durably keep ``events`` (written and fsync'd before this returns).

        :raises OSError: when even the local disk cannot take them (they are then only logged).
        """
        if not events:
            return
        with self._locked() as fd:
            os.write(fd, b"".join(_line(event) for event in events))
            os.fsync(fd)

    def pending(self) -> bool:
        try:
            return self._path.stat().st_size > 0
        except FileNotFoundError:
            return False

    def drain(self, write: Callable[[list[AuditEvent]], object]) -> int:
        """Hand every kept event to ``write`` (one call), then empty the file; returns how many.
        If ``write`` raises, the file is left as it was."""
        if not self.pending():
            return 0
        with self._locked() as fd:
            with open(fd, "rb", closefd=False) as handle:
                handle.seek(0)
                lines = handle.read().splitlines()
            events = []
            for line in lines:
                if not line.strip():
                    continue
                event = _event(line)
                if event is None:
                    logger.error("unreadable line in the audit spill file %s skipped", self._path)
                    continue
                events.append(event)
            if events:
                write(events)
            os.ftruncate(fd, 0)
            os.fsync(fd)
        return len(events)
