"""Proving an audit stream intact, or naming its first bad record.

From the store: walk each stream in ``seq`` order from its genesis (or from the signed
anchor a purge left), re-link every record and compare with the stored hash, check the
``seq`` written inside each record, check every signed head checkpoint against the chain,
and check that no signed checkpoint lies beyond the stream's end (a truncated tail).

From an export (``tenantry audit export``): re-canonicalise each line (RFC 8785), re-link,
check the chain from the anchor the signed export statement names to the head it ends at
(so a cut-off or extended file fails), check the signed checkpoints that came with it, and
compare the file's bytes with the digest in the statement, without the server or its database.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from tenantry.audit.chain import from_hex, genesis, link, record_seq
from tenantry.audit.checkpoints import CheckpointClaims, CheckpointSigner, ExportClaims, InvalidCheckpoint
from tenantry.audit.events import canonical_json
from tenantry.audit.store.base import AuditStore

__all__ = ["StreamReport", "verify_stream", "verify_export_lines"]

Progress = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class StreamReport:
    tenant_id: str
    records: int
    """Records checked."""
    ok: bool
    seq: int | None = None
    """The first bad record (or the first missing one)."""
    reason: str | None = None
    checkpoints: int = 0
    note: str | None = None
    """Said after ``ok`` (what an export was checked against)."""

    def line(self) -> str:
        if self.ok:
            line = f"{self.tenant_id}: ok, {self.records} records, {self.checkpoints} signed checkpoints"
            return f"{line}; {self.note}" if self.note else line
        where = f" at seq {self.seq}" if self.seq is not None else ""
        return f"{self.tenant_id}: FAILED{where}: {self.reason}"


_READ_HEAD: Any = object()


def verify_stream(
    store: AuditStore,
    signer: CheckpointSigner,
    tenant_id: str,
    *,
    progress: Progress | None = None,
    head: tuple[int, bytes] | None = _READ_HEAD,
) -> StreamReport:
    """Verify one tenant's stream (see the module docstring for every check).

    :param head: the stream's recorded head, when the caller read every head at once (verifying
        thousands of streams must not read the heads table once per stream).
    """
    # The head is read before the walk: a record appended meanwhile must not look like a truncation.
    recorded_head = store.heads().get(tenant_id) if head is _READ_HEAD else head
    start_seq, previous = 0, genesis(tenant_id)
    heads: dict[int, bytes] = {}
    checkpoint_count = 0
    for checkpoint in store.checkpoints(tenant_id):
        try:
            claims = signer.verify(checkpoint.token)
        except InvalidCheckpoint as exc:
            return StreamReport(tenant_id, 0, False, checkpoint.seq, f"checkpoint does not verify ({exc})")
        if claims.tenant_id != tenant_id:
            return StreamReport(tenant_id, 0, False, checkpoint.seq, "checkpoint belongs to another stream")
        checkpoint_count += 1
        if claims.kind == "purge" and claims.seq >= start_seq:
            start_seq, previous = claims.seq, claims.hash
        elif claims.kind == "head":
            heads[claims.seq] = claims.hash
    expected = start_seq + 1
    checked = 0
    sha256, pinned_at = hashlib.sha256, heads.get  # bound locally: this loop runs once per record
    for seq, record, stored_hash in store.chain(tenant_id, after_seq=start_seq):
        if seq != expected:
            if seq > expected:
                return _failed(tenant_id, checked, expected, f"record missing (deleted): next record is seq {seq}")
            return _failed(tenant_id, checked, seq, "duplicate or out-of-order sequence number")
        try:
            inner_seq = record_seq(record)
            digest = sha256(previous + record).digest()  # chain.link, inlined
        except TypeError:  # a tampered row whose column no longer holds bytes
            return _failed(tenant_id, checked, seq, "record does not match the chain (modified, inserted or reordered)")
        if inner_seq != seq:
            return _failed(tenant_id, checked, seq, "the sequence number inside the record was altered")
        if digest != stored_hash:
            return _failed(tenant_id, checked, seq, "record does not match the chain (modified, inserted or reordered)")
        pinned = pinned_at(seq)
        if pinned is not None and pinned != digest:
            return _failed(tenant_id, checked, seq, "chain rewritten: differs from a signed checkpoint")
        previous = digest
        expected += 1
        checked += 1
        if progress is not None and not checked % 50_000:
            progress(50_000)
    if progress is not None:
        progress(checked % 50_000)
    last = expected - 1
    beyond = [seq for seq in heads if seq > last]
    if beyond:
        return _failed(
            tenant_id,
            checked,
            last + 1,
            f"stream truncated: a signed checkpoint is at seq {max(beyond)}, the stream ends at {last}",
        )
    if recorded_head is not None and recorded_head[0] > last:
        return _failed(
            tenant_id,
            checked,
            last + 1,
            f"stream truncated: the head is at seq {recorded_head[0]}, the stream ends at {last}",
        )
    return StreamReport(tenant_id, checked, True, checkpoints=checkpoint_count)


def _failed(tenant_id: str, checked: int, seq: int | None, reason: str) -> StreamReport:
    return StreamReport(tenant_id, checked, False, seq, reason)


def verify_export_lines(
    lines: Iterable[bytes], statement: ExportClaims, checkpoints: Sequence[CheckpointClaims] = ()
) -> StreamReport:
    """Verify the lines of an export file against its verified export statement and checkpoints.

    Every line must be a record of the statement's stream, linked from its ``anchor`` at
    ``first_seq`` through ``last_seq`` with exactly the ``last_hash`` it names; the signed head
    checkpoints must agree with the chain and none may lie beyond its end; the file's bytes
    must hash to the statement's ``file_sha256``.
    """
    tenant_id = statement.tenant_id
    pinned: dict[int, bytes] = {}
    for claims in checkpoints:
        if claims.tenant_id != tenant_id:
            return StreamReport(tenant_id, 0, False, claims.seq, "a checkpoint belongs to another tenant's stream")
        if claims.kind == "purge" and claims.seq == statement.first_seq - 1:
            if claims.hash != statement.anchor:
                return _failed(tenant_id, 0, statement.first_seq, "the anchor differs from the purge checkpoint")
        elif claims.seq >= statement.first_seq:
            pinned[claims.seq] = claims.hash
    if statement.first_seq == 1 and statement.anchor != genesis(tenant_id):
        return StreamReport(tenant_id, 0, False, 1, "the export does not start from the stream's genesis")
    file_digest = hashlib.sha256()
    expected, previous, count = statement.first_seq, statement.anchor, 0
    for number, raw in enumerate(lines, 1):
        file_digest.update(raw)
        try:
            fields: dict[str, Any] = json.loads(raw)
            line_tenant = str(fields["tenant_id"])
            seq = int(fields["seq"])
            claimed = from_hex(fields.pop("hash"))
            prev_hash = from_hex(fields.pop("prev_hash"))
        except (ValueError, KeyError, TypeError) as exc:
            return _failed(tenant_id, count, expected, f"line {number} is not an audit record ({exc})")
        if line_tenant != tenant_id:
            return _failed(tenant_id, count, expected, f"line {number} is a record of another tenant's stream")
        if seq > statement.last_seq:
            return _failed(
                tenant_id, count, seq, f"record beyond the end of the signed export (seq {statement.last_seq})"
            )
        if seq != expected:
            if seq > expected:
                return _failed(tenant_id, count, expected, f"record missing: next is seq {seq}")
            return _failed(tenant_id, count, seq, "duplicate or out-of-order sequence number")
        if prev_hash != previous:
            reason = "prev_hash does not match the previous record"
            if seq == statement.first_seq:
                reason = "the first record does not link to the signed anchor"
            return _failed(tenant_id, count, seq, reason)
        if link(previous, canonical_json(fields)) != claimed:
            return _failed(tenant_id, count, seq, "record does not match its hash (modified)")
        if pinned.get(seq, claimed) != claimed:
            return _failed(tenant_id, count, seq, "chain rewritten: differs from a signed checkpoint")
        previous = claimed
        expected += 1
        count += 1
    last = expected - 1
    if last < statement.last_seq:
        return _failed(
            tenant_id,
            count,
            last + 1,
            f"export truncated: the signed export statement ends at seq {statement.last_seq}, the file at {last}",
        )
    if previous != statement.last_hash:
        return _failed(tenant_id, count, last, "the last record differs from the signed export statement")
    beyond = [seq for seq in pinned if seq > last]
    if beyond:
        return _failed(
            tenant_id,
            count,
            last + 1,
            f"export truncated: a signed checkpoint is at seq {max(beyond)}, the export ends at {last}",
        )
    if "sha256:" + file_digest.hexdigest() != statement.file_sha256:
        return _failed(
            tenant_id, count, None, "the file differs from the signed export (bytes changed outside the records)"
        )
    return StreamReport(tenant_id, count, True, checkpoints=len(checkpoints))
