"""Proving an audit stream intact, or naming its first bad record.

From the store: walk each stream in ``seq`` order from its genesis (or from the signed
anchor a purge left), re-link every record and compare with the stored hash, check the
``seq`` written inside each record, check every signed head checkpoint against the chain,
and check that no signed checkpoint lies beyond the stream's end (a truncated tail).

From an export (``tenantry audit export``): re-canonicalise each line (RFC 8785), re-link,
and check the chain, without the server or its database.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from tenantry.audit.chain import from_hex, genesis, link, record_seq
from tenantry.audit.checkpoints import CheckpointSigner, InvalidCheckpoint
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

    def line(self) -> str:
        if self.ok:
            return f"{self.tenant_id}: ok, {self.records} records, {self.checkpoints} signed checkpoints"
        return f"{self.tenant_id}: FAILED at seq {self.seq}: {self.reason}"


def verify_stream(
    store: AuditStore, signer: CheckpointSigner, tenant_id: str, *, progress: Progress | None = None
) -> StreamReport:
    """Verify one tenant's stream (see the module docstring for every check)."""
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
    recorded_head = store.heads().get(tenant_id)
    if recorded_head is not None and recorded_head[0] > last:
        return _failed(
            tenant_id,
            checked,
            last + 1,
            f"stream truncated: the head is at seq {recorded_head[0]}, the stream ends at {last}",
        )
    return StreamReport(tenant_id, checked, True, checkpoints=checkpoint_count)


def _failed(tenant_id: str, checked: int, seq: int, reason: str) -> StreamReport:
    return StreamReport(tenant_id, checked, False, seq, reason)


def verify_export_lines(lines: Iterable[str]) -> list[StreamReport]:
    """Verify an export file offline; one report per tenant found in it."""
    state: dict[str, tuple[int, bytes, int]] = {}
    failed: dict[str, StreamReport] = {}
    for number, text in enumerate(lines, 1):
        if not text.strip():
            continue
        try:
            fields: dict[str, Any] = json.loads(text)
            tenant_id = str(fields["tenant_id"])
            seq = int(fields["seq"])
            claimed = from_hex(fields.pop("hash"))
            previous = from_hex(fields.pop("prev_hash"))
        except (ValueError, KeyError, TypeError) as exc:
            return [StreamReport("?", number - 1, False, None, f"line {number} is not an audit record ({exc})")]
        if tenant_id in failed:
            continue
        last_seq, last_hash, count = state.get(tenant_id, (seq - 1, previous, 0))
        if count == 0 and seq == 1 and previous != genesis(tenant_id):
            failed[tenant_id] = StreamReport(tenant_id, 0, False, seq, "first record does not start from the genesis")
            continue
        if seq != last_seq + 1:
            failed[tenant_id] = StreamReport(
                tenant_id, count, False, last_seq + 1, f"record missing: next is seq {seq}"
            )
            continue
        if previous != last_hash:
            failed[tenant_id] = StreamReport(
                tenant_id, count, False, seq, "prev_hash does not match the previous record"
            )
            continue
        if link(previous, canonical_json(fields)) != claimed:
            failed[tenant_id] = StreamReport(tenant_id, count, False, seq, "record does not match its hash (modified)")
            continue
        state[tenant_id] = (seq, claimed, count + 1)
    reports = [StreamReport(t, count, True) for t, (_, _, count) in state.items() if t not in failed]
    return sorted([*reports, *failed.values()], key=lambda r: r.tenant_id)
