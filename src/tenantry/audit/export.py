"""Exporting a tenant's audit stream to a file that proves itself, and verifying one offline.

``OUT`` (JSON Lines) holds one record per line with ``prev_hash`` and ``hash``;
``OUT.checkpoints.json`` (the sidecar) holds a signed **export statement** naming the
stream, the anchor and seq the export starts from, the seq and hash it ends at, the record
count and the SHA-256 of ``OUT``; the stream's signed checkpoints; and the public keys
(JWKS) of the audit key ring. A file cut short, extended, edited or paired with another
export's sidecar does not verify.

The JWKS in the sidecar is only as trustworthy as the sidecar: someone who can rewrite
both files can re-sign them with a key of their own. Verifiers that pin the key (its id is
its RFC 7638 thumbprint) or bring the public keys from elsewhere catch that too.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from tenantry.audit.chain import export_line, genesis, link, record_seq, to_hex
from tenantry.audit.checkpoints import (
    CheckpointClaims,
    CheckpointSigner,
    ExportClaims,
    InvalidCheckpoint,
    TrustedKeys,
    verify_checkpoint,
    verify_export_statement,
)
from tenantry.audit.store.base import AuditStore
from tenantry.audit.verify import StreamReport, verify_export_lines, verify_stream

__all__ = [
    "SIDECAR_FORMAT",
    "ExportOutcome",
    "StreamNotIntact",
    "sidecar_path",
    "write_export",
    "verify_export_file",
]

SIDECAR_FORMAT = "tenantry-audit-export/1"
_SIDECAR_SUFFIX = ".checkpoints.json"


class StreamNotIntact(Exception):
    """The stream does not verify: an export of it is refused rather than signed."""

    def __init__(self, report: StreamReport) -> None:
        super().__init__(report.reason)
        self.report = report


@dataclass(frozen=True, slots=True)
class ExportOutcome:
    tenant_id: str
    records: int
    first_seq: int
    last_seq: int
    last_hash: bytes
    file_sha256: str
    sidecar: Path
    kid: str


def sidecar_path(export: Path) -> Path:
    """Where ``audit export`` puts the sidecar of ``export``, and where ``verify --file`` looks."""
    return export.with_name(export.name + _SIDECAR_SUFFIX)


def write_export(store: AuditStore, signer: CheckpointSigner, tenant_id: str, out: Path) -> ExportOutcome:
    """Write ``tenant_id``'s stream to ``out`` and its signed sidecar beside it (both replaced atomically).

    The stream is verified first, and every record is re-linked as it is written: a stream
    that does not verify is never signed.

    :raises StreamNotIntact: the stream (or a record read while exporting) does not verify.
    :raises OSError: ``out`` or its sidecar cannot be written.
    """
    checkpoints = store.checkpoints(tenant_id)  # before the records: none can lie beyond what is read
    report = verify_stream(store, signer, tenant_id)
    if not report.ok:
        raise StreamNotIntact(report)
    start_seq, anchor = 0, genesis(tenant_id)
    for checkpoint in checkpoints:
        claims = signer.verify(checkpoint.token)  # verified just now by verify_stream
        if claims.kind == "purge" and claims.seq >= start_seq:
            start_seq, anchor = claims.seq, claims.hash
    sidecar = sidecar_path(out)
    partial, partial_sidecar = out.with_name(f".{out.name}.partial"), sidecar.with_name(f".{sidecar.name}.partial")
    digest = hashlib.sha256()
    last_seq, previous = start_seq, anchor
    try:
        with _private_file(partial) as handle:
            for stored in store.read(tenant_id, after_seq=start_seq):
                if (
                    stored.seq != last_seq + 1
                    or record_seq(stored.record) != stored.seq
                    or link(previous, stored.record) != stored.hash
                ):
                    raise StreamNotIntact(
                        StreamReport(tenant_id, last_seq - start_seq, False, stored.seq, "changed while exporting")
                    )
                line = json.dumps(export_line(stored, previous), separators=(",", ":"), ensure_ascii=False)
                data = (line + "\n").encode()
                handle.write(data)
                digest.update(data)
                last_seq, previous = stored.seq, stored.hash
        file_sha256 = "sha256:" + digest.hexdigest()
        statement = signer.sign_export(
            tenant_id,
            first_seq=start_seq + 1,
            anchor=anchor,
            last_seq=last_seq,
            last_hash=previous,
            file_sha256=file_sha256,
            created=time.time(),
        )
        keys = signer.trusted_keys(source="the audit key ring")
        document: dict[str, Any] = {
            "format": SIDECAR_FORMAT,
            "tenant_id": tenant_id,
            "export": out.name,
            "first_seq": start_seq + 1,
            "last_seq": last_seq,
            "records": last_seq - start_seq,
            "head": to_hex(previous),
            "statement": statement,
            "checkpoints": [c.token for c in checkpoints],
            "jwks": keys.jwks(),
        }
        with _private_file(partial_sidecar) as handle:
            handle.write((json.dumps(document, indent=2) + "\n").encode())
        partial.replace(out)
        partial_sidecar.replace(sidecar)
    finally:
        partial.unlink(missing_ok=True)
        partial_sidecar.unlink(missing_ok=True)
    kid = verify_export_statement(statement, keys).kid
    return ExportOutcome(tenant_id, last_seq - start_seq, start_seq + 1, last_seq, previous, file_sha256, sidecar, kid)


@contextmanager
def _private_file(path: Path) -> Iterator[BinaryIO]:
    """A new file, mode 0600 (an export holds a tenant's audit trail), on disk when the block ends."""
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb", buffering=1 << 20) as handle:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())


def _first_tenant(export: Path) -> str:
    """The tenant of the file's first record, for messages about a file whose sidecar is unusable."""
    try:
        with export.open("rb") as handle:
            return str(json.loads(handle.readline())["tenant_id"])
    except (OSError, ValueError, KeyError, TypeError):
        return "?"


def verify_export_file(
    export: Path, sidecar: Path, pinned: TrustedKeys | None = None, *, kids: Collection[str] = ()
) -> StreamReport:
    """Verify an export file against its sidecar.

    :param pinned: the keys to trust (brought out of band); by default the sidecar's own JWKS,
        which proves integrity against accidents and partial edits but not against someone who
        re-signed both files (the report says so).
    :param kids: trust only the keys with these ids (RFC 7638 thumbprints, so this pins the keys).
    :raises OSError: ``export`` cannot be read.
    """
    with export.open("rb"):
        pass  # an unreadable export is the caller's usage error, not a verification result
    try:
        document = json.loads(sidecar.read_bytes())
    except FileNotFoundError:
        return StreamReport(
            _first_tenant(export), 0, False, None, f"no export statement: {sidecar} not found (give --checkpoints PATH)"
        )
    except (OSError, ValueError) as exc:
        return StreamReport(_first_tenant(export), 0, False, None, f"cannot read the checkpoints file {sidecar}: {exc}")
    if not isinstance(document, dict) or not isinstance(document.get("statement"), str):
        return StreamReport(
            _first_tenant(export),
            0,
            False,
            None,
            f"{sidecar} holds no signed export statement (written by an older version? export again)",
        )
    try:
        keys = pinned or TrustedKeys.from_jwks(document.get("jwks"), source="the export's own JWKS", pinned=False)
        if kids:
            keys = keys.only(kids, source=f"{keys.source}, pinned to key {', '.join(sorted(kids))}")
        statement = verify_export_statement(document["statement"], keys)
    except InvalidCheckpoint as exc:
        return StreamReport(_first_tenant(export), 0, False, None, f"the export statement does not verify: {exc}")
    tenant_id = statement.tenant_id
    file_tenant = _first_tenant(export)
    if file_tenant not in ("?", tenant_id):
        return StreamReport(
            file_tenant, 0, False, None, "the export statement is for another tenant's stream (wrong checkpoints file)"
        )
    tokens = document.get("checkpoints")
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        return StreamReport(tenant_id, 0, False, None, f"{sidecar}: checkpoints is not a list of signed checkpoints")
    checkpoints: list[CheckpointClaims] = []
    for token in tokens:
        try:
            checkpoints.append(verify_checkpoint(token, keys))
        except InvalidCheckpoint as exc:
            return StreamReport(tenant_id, 0, False, None, f"a checkpoint does not verify: {exc}")
    with export.open("rb") as lines:
        report = verify_export_lines(lines, statement, checkpoints)
    if not report.ok:
        return report
    return StreamReport(
        tenant_id,
        report.records,
        True,
        checkpoints=report.checkpoints,
        note=_trust_note(statement, keys),
    )


def _trust_note(statement: ExportClaims, keys: TrustedKeys) -> str:
    span = f"seq {statement.first_seq}-{statement.last_seq}" if statement.records else "no records"
    signed = f"{span}, signed {statement.created} by key {statement.kid} from {keys.source}"
    return signed if keys.pinned else f"{signed} (not pinned: see --kid, --jwks or --data-dir)"
