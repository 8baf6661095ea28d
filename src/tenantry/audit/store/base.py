"""Where audit records live: one append-only, hash-chained stream per tenant."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from tenantry.audit.chain import StoredRecord
from tenantry.audit.events import AuditEvent

__all__ = [
    "AuditStore",
    "CallJournal",
    "ServerInstance",
    "StoredCheckpoint",
    "CheckpointKind",
    "PurgeOutcome",
    "Signer",
]

CheckpointKind = Literal["head", "purge"]

Signer = Callable[[str, int, bytes, CheckpointKind, float], str]
"""``(tenant_id, seq, digest, kind, created) -> signed checkpoint token``."""


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    tenant_id: str
    seq: int
    kind: CheckpointKind
    hash: bytes
    created: float
    token: str
    """The signed statement (JWS); only its verified payload is trusted."""

    def as_row(self) -> tuple[str, int, str, bytes, float, str]:
        """``(tenant_id, seq, kind, hash, created, token)``, the column order of every backend."""
        return (self.tenant_id, self.seq, self.kind, self.hash, self.created, self.token)


@dataclass(frozen=True, slots=True)
class PurgeOutcome:
    tenant_id: str
    through_seq: int
    purged: int


class AuditStore(Protocol):
    """Durable audit streams. Synchronous; the server drives it from a writer thread.

    Every method raises :class:`~tenantry.core.errors.AuditUnavailable` when the store
    cannot be reached or written (full disk, lost connection, lock held too long).
    """

    def append(self, events: Sequence[AuditEvent]) -> list[StoredRecord]:
        """Chain and store ``events`` (each onto its tenant's stream) in one transaction.

        Returns only once the transaction is durable (committed and flushed to disk).
        """
        ...

    def heads(self) -> dict[str, tuple[int, bytes]]:
        """``tenant_id -> (last seq, last hash)`` for every stream."""
        ...

    def streams(self) -> list[str]: ...

    def read(self, tenant_id: str, *, after_seq: int = 0) -> Iterator[StoredRecord]:
        """The stream's records in ``seq`` order, starting after ``after_seq``."""
        ...

    def chain(self, tenant_id: str, *, after_seq: int = 0) -> Iterator[tuple[int, bytes, bytes]]:
        """``(seq, record, hash)`` of the stream in ``seq`` order: the raw rows ``verify`` walks.

        Values are passed through as stored, so a tampered column may not even be bytes.
        """
        ...

    def recent(self, tenant_id: str | None, limit: int, *, after_created: float | None = None) -> list[StoredRecord]:
        """The newest ``limit`` records, oldest first: of one stream in ``seq`` order, or of
        all streams interleaved by time."""
        ...

    def add_checkpoint(self, checkpoint: StoredCheckpoint) -> None: ...

    def checkpoints(self, tenant_id: str) -> list[StoredCheckpoint]: ...

    def purge(self, tenant_id: str, before: float, sign: Signer) -> PurgeOutcome | None:
        """Delete the records created before ``before``, leaving a signed purge checkpoint
        that anchors the remaining chain. ``None`` when there is nothing to purge.
        Needs the store's administrative credentials on PostgreSQL."""
        ...

    def ping(self) -> None:
        """:raises AuditUnavailable: when the store could not take a write right now."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ServerInstance:
    """One running server process writing to the store (for finding calls a crash left open)."""

    instance: str
    host: str
    pid: int
    started: float
    heartbeat: float
    low_water: float = 0.0
    """Every call this instance started before this time has its outcome recorded."""


@runtime_checkable
class CallJournal(Protocol):
    """A store that knows which server processes write to it, so that the calls a dead one
    left between their start (``call_started`` with ``detail.instance``) and their outcome can be
    found and closed: every start after the dead instance's ``low_water`` without an outcome
    (same tenant and ``request_id``) was interrupted. No per-call bookkeeping: a call costs its
    two records only.
    """

    def register_instance(self, instance: ServerInstance) -> None: ...

    def heartbeat(self, instance: str, now: float, low_water: float) -> None: ...

    def instances(self) -> list[ServerInstance]: ...

    def records_since(self, created: float) -> Iterator[StoredRecord]:
        """Every record created at or after ``created`` (all streams, oldest first)."""
        ...

    def retire_instance(self, instance: str) -> None:
        """Forget an instance (after its open calls were closed)."""
        ...
