"""One contract over every audit backend (SQLite and PostgreSQL): streams, chains, tampering.

The tamper tests act as an attacker with full write access to the database (triggers
disabled or dropped), then check that ``verify`` names the first bad record.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from tenantry.audit.chain import genesis, link
from tenantry.audit.checkpoints import CheckpointSigner
from tenantry.audit.events import AuditEvent
from tenantry.audit.store.base import AuditStore
from tenantry.audit.store.factory import open_audit_store
from tenantry.audit.verify import verify_stream
from tenantry.auth.keys import KeyRing
from tenantry.core.errors import AuditUnavailable
from tests.integration.conftest import DatabaseRoles


@dataclass
class Backend:
    name: str
    open: Callable[[], AuditStore]
    attack: Callable[[str, tuple], None]
    """Run SQL with full privileges and triggers bypassed (``{records}`` is the table)."""
    records: str


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        path = tmp_path / "audit.sqlite3"

        def attack_sqlite(statement: str, params: tuple = ()) -> None:
            import sqlite3

            conn = sqlite3.connect(path, isolation_level=None)
            for trigger in ("audit_records_append_only_update", "audit_records_append_only_delete"):
                conn.execute(f"DROP TRIGGER IF EXISTS {trigger}")
            conn.execute(statement.format(records="audit_records"), params)
            conn.close()

        yield Backend("sqlite", lambda: open_audit_store(f"sqlite:///{path}", tmp_path), attack_sqlite, "audit_records")
        return
    url = request.getfixturevalue("postgres_url")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS tenantry_audit CASCADE")

    def attack_pg(statement: str, params: tuple = ()) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SET session_replication_role = replica")  # superuser: triggers off
            conn.execute(statement.format(records="tenantry_audit.records").replace("?", "%s"), params)

    yield Backend("postgres", lambda: open_audit_store(url, tmp_path), attack_pg, "tenantry_audit.records")


@pytest.fixture
def signer(tmp_path: Path) -> CheckpointSigner:
    keys = KeyRing(tmp_path / "keys", file_name="audit-signing-keys.json")
    keys.ensure()
    return CheckpointSigner(keys, issuer="http://test")


def event(tenant: str, n: int, created: float | None = None) -> AuditEvent:
    return AuditEvent(
        event_type="tool_call",
        tenant_id=tenant,
        result_status="ok",
        tool_name="echo",
        args_hash=f"sha256:{n:064x}",
        latency_ms=1.5 + n,
        subject=f"{tenant}-agent",
        **({"created": created} if created is not None else {}),
    )


def fill(store: AuditStore, tenants: tuple[str, ...] = ("acme", "globex", "initech"), each: int = 20) -> None:
    for n in range(each):
        store.append([event(t, n) for t in tenants])


def test_each_tenant_has_its_own_contiguous_stream(backend: Backend, signer: CheckpointSigner) -> None:
    store = backend.open()
    fill(store)
    for tenant in ("acme", "globex", "initech"):
        records = list(store.read(tenant))
        assert [r.seq for r in records] == list(range(1, 21))
        assert all(f'"tenant_id":"{tenant}"'.encode() in r.record for r in records)
        assert verify_stream(store, signer, tenant).ok
    assert store.heads()["acme"][0] == 20
    store.close()


def test_concurrent_writers_on_many_tenants_keep_streams_apart(backend: Backend, signer: CheckpointSigner) -> None:
    tenants = [f"t{i}" for i in range(12)]
    errors: list[BaseException] = []

    def writer(worker: int) -> None:
        store = backend.open()  # each thread its own connection, like separate processes
        try:
            for n in range(25):
                store.append([event(tenants[(worker + n) % len(tenants)], n), event(tenants[worker % len(tenants)], n)])
        except BaseException as exc:
            errors.append(exc)
        finally:
            store.close()

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    store = backend.open()
    total = 0
    for tenant in tenants:
        report = verify_stream(store, signer, tenant)
        assert report.ok, report.line()
        total += report.records
        assert all(f'"tenant_id":"{tenant}"'.encode() in r.record for r in store.read(tenant))
    assert total == 6 * 25 * 2
    store.close()


@pytest.fixture
def filled(backend: Backend, signer: CheckpointSigner) -> Iterator[AuditStore]:
    store = backend.open()
    fill(store, ("acme", "globex"), 10)
    yield store
    store.close()


def test_modified_record_is_named(backend: Backend, filled: AuditStore, signer: CheckpointSigner) -> None:
    backend.attack(
        "UPDATE {records} SET record = replace(record, 'echo', 'evil') WHERE tenant_id = 'acme' AND seq = 4"
        if backend.name == "sqlite"
        else "UPDATE {records} SET record = convert_to(replace(convert_from(record, 'UTF8'), 'echo', 'evil'), 'UTF8')"
        " WHERE tenant_id = 'acme' AND seq = 4"
    )
    report = verify_stream(filled, signer, "acme")
    assert (report.ok, report.seq) == (False, 4)
    assert "does not match the chain" in report.reason
    assert verify_stream(filled, signer, "globex").ok  # other streams unaffected


def test_deleted_record_is_named(backend: Backend, filled: AuditStore, signer: CheckpointSigner) -> None:
    backend.attack("DELETE FROM {records} WHERE tenant_id = 'acme' AND seq = 6")
    report = verify_stream(filled, signer, "acme")
    assert (report.ok, report.seq) == (False, 6)
    assert "missing" in report.reason


def test_inserted_record_is_named(backend: Backend, filled: AuditStore, signer: CheckpointSigner) -> None:
    for seq in range(10, 4, -1):  # make room at seq 5 by shifting the tail up
        backend.attack("UPDATE {records} SET seq = seq + 1 WHERE tenant_id = 'acme' AND seq = ?", (seq,))
    forged = filled_record(filled, "acme", 4)
    backend.attack(
        "INSERT INTO {records} (tenant_id, seq, record, hash, created) VALUES ('acme', 5, ?, ?, 0)",
        (forged.record, forged.hash),
    )
    report = verify_stream(filled, signer, "acme")
    assert (report.ok, report.seq) == (False, 5)


def test_reordered_records_are_named(backend: Backend, filled: AuditStore, signer: CheckpointSigner) -> None:
    three, seven = filled_record(filled, "acme", 3), filled_record(filled, "acme", 7)
    backend.attack(
        "UPDATE {records} SET record = ?, hash = ? WHERE tenant_id = 'acme' AND seq = 3", (seven.record, seven.hash)
    )
    backend.attack(
        "UPDATE {records} SET record = ?, hash = ? WHERE tenant_id = 'acme' AND seq = 7", (three.record, three.hash)
    )
    report = verify_stream(filled, signer, "acme")
    assert (report.ok, report.seq) == (False, 3)


def test_truncated_tail_is_caught_by_the_signed_checkpoint(
    backend: Backend, filled: AuditStore, signer: CheckpointSigner
) -> None:
    from tenantry.audit.checkpoints import Checkpointer

    Checkpointer(signer, interval=60).checkpoint_now(filled)
    backend.attack("DELETE FROM {records} WHERE tenant_id = 'acme' AND seq > 7")
    backend.attack(
        "UPDATE "
        + ("audit_heads" if backend.name == "sqlite" else "tenantry_audit.heads")
        + " SET seq = 7 WHERE tenant_id = 'acme'"
    )
    report = verify_stream(filled, signer, "acme")
    assert (report.ok, report.seq) == (False, 8)
    assert "truncated" in report.reason


def test_a_consistently_rewritten_tail_is_caught_by_the_signed_checkpoint(
    backend: Backend, filled: AuditStore, signer: CheckpointSigner
) -> None:
    from tenantry.audit.checkpoints import Checkpointer

    Checkpointer(signer, interval=60).checkpoint_now(filled)
    previous = filled_record(filled, "acme", 8).hash
    for seq in (9, 10):  # the attacker recomputes every hash after the change
        old = filled_record(filled, "acme", seq)
        record = old.record.replace(b"echo", b"evil")
        previous = link(previous, record)
        backend.attack(
            "UPDATE {records} SET record = ?, hash = ? WHERE tenant_id = 'acme' AND seq = ?", (record, previous, seq)
        )
    report = verify_stream(filled, signer, "acme")
    assert (report.ok, report.seq) == (False, 10)
    assert "signed checkpoint" in report.reason


def test_forged_checkpoint_is_refused(
    backend: Backend, filled: AuditStore, signer: CheckpointSigner, tmp_path: Path
) -> None:
    other_keys = KeyRing(tmp_path / "other", file_name="audit-signing-keys.json")
    other_keys.ensure()
    forger = CheckpointSigner(other_keys, issuer="http://test")
    filled.add_checkpoint(forger.checkpoint("acme", 5, b"\x00" * 32, "purge", time.time()))
    report = verify_stream(filled, signer, "acme")
    assert not report.ok and "checkpoint does not verify" in report.reason


def test_purge_leaves_a_verifiable_remainder(backend: Backend, signer: CheckpointSigner) -> None:
    store = backend.open()
    old = time.time() - 400 * 86400
    store.append([event("acme", n, created=old + n) for n in range(5)])
    store.append([event("acme", n) for n in range(5, 9)])
    outcome = store.purge("acme", time.time() - 365 * 86400, signer.sign)
    assert outcome is not None and (outcome.through_seq, outcome.purged) == (5, 5)
    assert [r.seq for r in store.read("acme")] == [6, 7, 8, 9]
    report = verify_stream(store, signer, "acme")
    assert report.ok and report.records == 4
    assert store.purge("acme", time.time() - 365 * 86400, signer.sign) is None
    store.append([event("acme", 99)])
    assert verify_stream(store, signer, "acme").ok
    store.close()


def test_sqlite_triggers_keep_records_append_only(tmp_path: Path) -> None:
    import sqlite3

    store = open_audit_store(None, tmp_path)
    fill(store, ("acme",), 3)
    store.close()
    conn = sqlite3.connect(tmp_path / "audit.sqlite3")
    for statement in ("UPDATE audit_records SET record = x'00'", "DELETE FROM audit_records"):
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute(statement)
    assert conn.execute("SELECT count(*) FROM audit_records").fetchone()[0] == 3
    conn.close()


def filled_record(store: AuditStore, tenant: str, seq: int):
    return next(r for r in store.read(tenant) if r.seq == seq)


def test_genesis_binds_the_tenant() -> None:
    assert genesis("acme") != genesis("globex")


@pytest.mark.postgres
def test_postgres_app_role_is_append_only(db_roles: DatabaseRoles, tmp_path: Path, signer: CheckpointSigner) -> None:
    store = open_audit_store(db_roles.app_url, tmp_path)
    store.append([event("acme", n) for n in range(3)])  # the app role can append...
    assert [r.seq for r in store.read("acme")] == [1, 2, 3]  # ...and read
    assert verify_stream(store, signer, "acme").ok
    store.close()
    with psycopg.connect(db_roles.app_url, autocommit=True) as conn:
        for statement in (
            "UPDATE tenantry_audit.records SET record = '\\x00'",
            "DELETE FROM tenantry_audit.records",
            "TRUNCATE tenantry_audit.records",
            "DELETE FROM tenantry_audit.checkpoints",
            "DROP TABLE tenantry_audit.records",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
    with psycopg.connect(db_roles.owner_url, autocommit=True) as conn:  # even the owner is stopped by the triggers
        for statement in ("UPDATE tenantry_audit.records SET record = '\\x00'", "TRUNCATE tenantry_audit.records"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
    with psycopg.connect(db_roles.owner_url) as conn:
        assert conn.execute("SELECT count(*) FROM tenantry_audit.records").fetchone()[0] == 3


def test_unreachable_postgres_is_audit_unavailable(tmp_path: Path) -> None:
    with pytest.raises(AuditUnavailable):
        open_audit_store("postgresql://postgres@127.0.0.1:1/none", tmp_path)
