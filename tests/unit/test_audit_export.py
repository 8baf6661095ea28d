"""An audit export proves itself: a signed statement of where it starts and ends, checked offline.

Each refusal has its positive control beside it (the genuine export verifies).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tenantry.audit.chain import genesis, link
from tenantry.audit.checkpoints import (
    AUDIT_KEY_FILE,
    CheckpointClaims,
    Checkpointer,
    CheckpointSigner,
    ExportClaims,
    InvalidCheckpoint,
    TrustedKeys,
    verify_checkpoint,
    verify_export_statement,
)
from tenantry.audit.events import AuditEvent, canonical_json
from tenantry.audit.export import StreamNotIntact, sidecar_path, verify_export_file, write_export
from tenantry.audit.store.sqlite import SqliteAuditStore
from tenantry.audit.verify import verify_export_lines, verify_stream
from tenantry.auth.keys import KeyRing


def event(tenant: str, n: int, created: float | None = None) -> AuditEvent:
    return AuditEvent(
        event_type="tool_call",
        tenant_id=tenant,
        result_status="ok",
        tool_name="echo",
        args_hash=f"sha256:{n:064x}",
        subject=f"{tenant}-agent",
        **({"created": created} if created is not None else {}),
    )


def ring(path: Path) -> KeyRing:
    keys = KeyRing(path, file_name=AUDIT_KEY_FILE)
    keys.ensure()
    return keys


@pytest.fixture
def keys(tmp_path: Path) -> KeyRing:
    return ring(tmp_path / "keys")


@pytest.fixture
def signer(keys: KeyRing) -> CheckpointSigner:
    return CheckpointSigner(keys, issuer="http://test")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteAuditStore]:
    store = SqliteAuditStore(tmp_path / "audit.sqlite3")
    for n in range(10):
        store.append([event("acme", n), event("globex", n)])
    yield store
    store.close()


def export(store: SqliteAuditStore, signer: CheckpointSigner, tmp_path: Path, tenant: str = "acme") -> Path:
    out = tmp_path / f"{tenant}-{time.monotonic_ns()}.jsonl"
    write_export(store, signer, tenant, out)
    return out


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


def test_export_verifies_against_its_signed_statement(
    store: SqliteAuditStore, signer: CheckpointSigner, tmp_path: Path
) -> None:
    out = export(store, signer, tmp_path)
    report = verify_export_file(out, sidecar_path(out))
    assert (report.ok, report.tenant_id, report.records) == (True, "acme", 10), report
    assert "not pinned" in (report.note or "")
    sidecar = json.loads(sidecar_path(out).read_text())
    assert sidecar["tenant_id"] == "acme" and sidecar["last_seq"] == 10 and sidecar["jwks"]["keys"]
    assert out.stat().st_mode & 0o077 == 0 and sidecar_path(out).stat().st_mode & 0o077 == 0


@pytest.mark.parametrize("cut", [1, 3, 10])
def test_cut_off_export_does_not_verify_even_before_the_first_checkpoint(
    store: SqliteAuditStore, signer: CheckpointSigner, tmp_path: Path, cut: int
) -> None:
    assert store.checkpoints("acme") == []  # nothing but the export statement to hold it against
    out = export(store, signer, tmp_path)
    out.write_text("".join(lines(out)[:-cut]))
    report = verify_export_file(out, sidecar_path(out))
    assert (report.ok, report.tenant_id, report.seq) == (False, "acme", 11 - cut)
    assert "export truncated" in (report.reason or "") and "ends at seq 10" in (report.reason or "")


def test_modified_line_does_not_verify(store: SqliteAuditStore, signer: CheckpointSigner, tmp_path: Path) -> None:
    out = export(store, signer, tmp_path)
    text = lines(out)
    text[4] = text[4].replace('"echo"', '"evil"')
    out.write_text("".join(text))
    report = verify_export_file(out, sidecar_path(out))
    assert (report.ok, report.seq) == (False, 5) and "modified" in (report.reason or "")


def test_consistently_rewritten_last_record_does_not_verify(
    store: SqliteAuditStore, signer: CheckpointSigner, tmp_path: Path
) -> None:
    out = export(store, signer, tmp_path)
    text = lines(out)
    last = json.loads(text[-1])
    last.pop("hash")
    previous = bytes.fromhex(last["prev_hash"][7:])
    last.pop("prev_hash")
    last["tool_name"] = "evil"
    digest = link(previous, canonical_json(last))
    text[-1] = json.dumps({**last, "prev_hash": "sha256:" + previous.hex(), "hash": "sha256:" + digest.hex()}) + "\n"
    out.write_text("".join(text))
    report = verify_export_file(out, sidecar_path(out))
    assert (report.ok, report.seq) == (False, 10) and "differs from the signed export" in (report.reason or "")


def test_bytes_changed_outside_the_records_do_not_verify(
    store: SqliteAuditStore, signer: CheckpointSigner, tmp_path: Path
) -> None:
    out = export(store, signer, tmp_path)
    out.write_text("".join(line.replace('{"actor"', '{ "actor"') for line in lines(out)))  # same JSON, other bytes
    report = verify_export_file(out, sidecar_path(out))
    assert not report.ok and "bytes changed outside the records" in (report.reason or "")


def test_missing_sidecar_does_not_verify(store: SqliteAuditStore, signer: CheckpointSigner, tmp_path: Path) -> None:
    out = export(store, signer, tmp_path)
    moved = tmp_path / "elsewhere.json"
    sidecar_path(out).rename(moved)
    report = verify_export_file(out, sidecar_path(out))
    assert (report.ok, report.tenant_id) == (False, "acme") and "no export statement" in (report.reason or "")
    assert verify_export_file(out, moved).ok  # --checkpoints PATH


def test_sidecar_of_another_tenant_does_not_verify(
    store: SqliteAuditStore, signer: CheckpointSigner, tmp_path: Path
) -> None:
    acme, globex = export(store, signer, tmp_path, "acme"), export(store, signer, tmp_path, "globex")
    report = verify_export_file(acme, sidecar_path(globex))
    assert (report.ok, report.tenant_id) == (False, "acme") and "another tenant" in (report.reason or "")
    assert verify_export_file(globex, sidecar_path(globex)).ok


def test_sidecar_of_another_export_of_the_stream_does_not_verify(
    store: SqliteAuditStore, signer: CheckpointSigner, tmp_path: Path
) -> None:
    early = export(store, signer, tmp_path)
    store.append([event("acme", 99)])
    late = export(store, signer, tmp_path)
    longer = verify_export_file(late, sidecar_path(early))
    assert (longer.ok, longer.seq) == (False, 11) and "beyond the end of the signed export" in (longer.reason or "")
    shorter = verify_export_file(early, sidecar_path(late))
    assert (shorter.ok, shorter.seq) == (False, 11) and "export truncated" in (shorter.reason or "")


def forge(out: Path, forger: CheckpointSigner, *, swap_jwks: bool, drop: int = 1) -> None:
    """Cut ``drop`` records off ``out`` and re-sign its statement with ``forger``'s key."""
    text = lines(out)[:-drop]
    out.write_text("".join(text))
    document = json.loads(sidecar_path(out).read_text())
    last = json.loads(text[-1])
    document["statement"] = forger.sign_export(
        "acme",
        first_seq=1,
        anchor=genesis("acme"),
        last_seq=last["seq"],
        last_hash=bytes.fromhex(last["hash"][7:]),
        file_sha256="sha256:" + hashlib.sha256(out.read_bytes()).hexdigest(),
        created=time.time(),
    )
    if swap_jwks:
        document["jwks"] = forger.trusted_keys(source="forger").jwks()
    sidecar_path(out).write_text(json.dumps(document))


def test_statement_resigned_with_a_key_not_in_the_jwks_does_not_verify(
    store: SqliteAuditStore, signer: CheckpointSigner, tmp_path: Path
) -> None:
    out = export(store, signer, tmp_path)
    forge(out, CheckpointSigner(ring(tmp_path / "forger"), issuer="http://test"), swap_jwks=False)
    report = verify_export_file(out, sidecar_path(out))
    assert not report.ok and "signed by an unknown key" in (report.reason or "")


def test_resigned_statement_with_a_swapped_jwks_is_caught_when_the_key_is_pinned(
    store: SqliteAuditStore, signer: CheckpointSigner, keys: KeyRing, tmp_path: Path
) -> None:
    genuine = export(store, signer, tmp_path)
    real_kid = keys.current().kid
    assert verify_export_file(genuine, sidecar_path(genuine), kids=[real_kid]).ok  # the pins accept the genuine
    assert verify_export_file(genuine, sidecar_path(genuine), TrustedKeys.from_ring(keys, source="ring")).ok
    out = export(store, signer, tmp_path)
    forge(out, CheckpointSigner(ring(tmp_path / "forger"), issuer="http://test"), swap_jwks=True)
    unpinned = verify_export_file(out, sidecar_path(out))
    assert unpinned.ok and "not pinned" in (unpinned.note or "")  # the documented limit of an unpinned check
    by_kid = verify_export_file(out, sidecar_path(out), kids=[real_kid])
    assert not by_kid.ok and "unknown key" in (by_kid.reason or "")
    by_ring = verify_export_file(out, sidecar_path(out), TrustedKeys.from_ring(keys, source="the data dir"))
    assert not by_ring.ok and "unknown key" in (by_ring.reason or "")


def test_a_jwks_whose_key_id_is_not_the_thumbprint_is_refused(keys: KeyRing, tmp_path: Path) -> None:
    other = ring(tmp_path / "other")
    jwks = TrustedKeys.from_ring(other, source="x").jwks()
    assert TrustedKeys.from_jwks(jwks, source="jwks", pinned=True).kids() == [other.current().kid]
    jwks["keys"][0]["kid"] = keys.current().kid  # claim the genuine key's id for another key
    with pytest.raises(InvalidCheckpoint, match="not the thumbprint"):
        TrustedKeys.from_jwks(jwks, source="jwks", pinned=True)


def test_a_signed_checkpoint_beyond_the_end_of_the_export_is_truncation() -> None:
    statement = ExportClaims("acme", 1, genesis("acme"), 0, genesis("acme"), 0, "sha256:" + "0" * 64, "", "")
    report = verify_export_lines([], statement, [CheckpointClaims("head", "acme", 3, b"\x00" * 32, "")])
    assert (report.ok, report.seq) == (False, 1) and "signed checkpoint is at seq 3" in (report.reason or "")


def test_checkpoints_in_the_sidecar_are_checked_against_the_exported_chain(
    store: SqliteAuditStore, signer: CheckpointSigner, tmp_path: Path
) -> None:
    Checkpointer(signer, interval=60).checkpoint_now(store)
    out = export(store, signer, tmp_path)
    assert verify_export_file(out, sidecar_path(out)).checkpoints == 1
    document = json.loads(sidecar_path(out).read_text())
    document["checkpoints"].append(signer.sign("acme", 4, b"\x01" * 32, "head", time.time()))
    sidecar_path(out).write_text(json.dumps(document))
    report = verify_export_file(out, sidecar_path(out))
    assert (report.ok, report.seq) == (False, 4) and "differs from a signed checkpoint" in (report.reason or "")


def test_an_export_statement_never_passes_for_a_checkpoint(
    store: SqliteAuditStore, signer: CheckpointSigner, keys: KeyRing, tmp_path: Path
) -> None:
    out = export(store, signer, tmp_path)
    statement = json.loads(sidecar_path(out).read_text())["statement"]
    checkpoint = signer.sign("acme", 10, store.heads()["acme"][1], "head", time.time())
    assert verify_checkpoint(checkpoint, keys).seq == 10
    assert verify_export_statement(statement, keys).last_seq == 10
    with pytest.raises(InvalidCheckpoint, match="not a checkpoint"):
        verify_checkpoint(statement, keys)
    with pytest.raises(InvalidCheckpoint, match="not an export statement"):
        verify_export_statement(checkpoint, keys)


def test_the_live_stream_still_verifies_after_exports(
    store: SqliteAuditStore, signer: CheckpointSigner, tmp_path: Path
) -> None:
    Checkpointer(signer, interval=60).checkpoint_now(store)
    export(store, signer, tmp_path)
    assert verify_stream(store, signer, "acme").ok and verify_stream(store, signer, "globex").ok


def test_a_stream_that_does_not_verify_is_not_exported(
    store: SqliteAuditStore, signer: CheckpointSigner, tmp_path: Path
) -> None:
    conn = sqlite3.connect(tmp_path / "audit.sqlite3", isolation_level=None)
    conn.execute("DROP TRIGGER audit_records_append_only_update")
    conn.execute(
        "UPDATE audit_records SET record = replace(record, 'echo', 'evil') WHERE tenant_id = 'acme' AND seq = 3"
    )
    conn.close()
    out = tmp_path / "refused.jsonl"
    with pytest.raises(StreamNotIntact) as refused:
        write_export(store, signer, "acme", out)
    assert refused.value.report.seq == 3
    assert not out.exists() and not sidecar_path(out).exists()


def test_export_after_a_purge_starts_from_the_signed_anchor(signer: CheckpointSigner, tmp_path: Path) -> None:
    store = SqliteAuditStore(tmp_path / "purged.sqlite3")
    old = time.time() - 400 * 86400
    store.append([event("acme", n, created=old + n) for n in range(5)])
    store.append([event("acme", n) for n in range(3)])
    assert store.purge("acme", time.time() - 365 * 86400, signer.sign) is not None
    out = export(store, signer, tmp_path)
    store.close()
    report = verify_export_file(out, sidecar_path(out))
    assert (report.ok, report.records) == (True, 3) and "seq 6-8" in (report.note or "")
    out.write_text("".join(lines(out)[1:]))  # the first kept record cut off
    cut = verify_export_file(out, sidecar_path(out))
    assert (cut.ok, cut.seq) == (False, 6) and "record missing" in (cut.reason or "")
