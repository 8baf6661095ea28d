"""Embedded audit store: ``<data_dir>/audit.sqlite3`` (WAL, ``synchronous=FULL``).

Append-only is enforced by triggers: an ``UPDATE`` always fails, a ``DELETE`` only
succeeds for records an explicit purge has released. Someone with write access to the
file can still drop the triggers; the hash chain and signed checkpoints make any such
edit evident to ``tenantry audit verify``.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from tenantry.audit.chain import StoredRecord, encode_record, genesis, link
from tenantry.audit.events import AuditEvent
from tenantry.audit.store.base import PurgeOutcome, ServerInstance, Signer, StoredCheckpoint
from tenantry.core.errors import AuditUnavailable

__all__ = ["SqliteAuditStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_records (
    tenant_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    record BLOB NOT NULL,
    hash BLOB NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (tenant_id, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS audit_records_created ON audit_records (created);
CREATE TABLE IF NOT EXISTS audit_heads (
    tenant_id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    hash BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_checkpoints (
    tenant_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('head', 'purge')),
    hash BLOB NOT NULL,
    created REAL NOT NULL,
    token TEXT NOT NULL,
    PRIMARY KEY (tenant_id, seq, kind)
);
CREATE TRIGGER IF NOT EXISTS audit_records_advance_head
AFTER INSERT ON audit_records
BEGIN
    INSERT INTO audit_heads (tenant_id, seq, hash) VALUES (NEW.tenant_id, NEW.seq, NEW.hash)
    ON CONFLICT(tenant_id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash WHERE excluded.seq > audit_heads.seq;
END;
CREATE TABLE IF NOT EXISTS audit_purges (
    tenant_id TEXT PRIMARY KEY,
    through_seq INTEGER NOT NULL
);
CREATE TRIGGER IF NOT EXISTS audit_records_append_only_update
BEFORE UPDATE ON audit_records
BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_records_append_only_delete
BEFORE DELETE ON audit_records
WHEN OLD.seq > COALESCE((SELECT through_seq FROM audit_purges WHERE tenant_id = OLD.tenant_id), 0)
BEGIN SELECT RAISE(ABORT, 'audit records are append-only; use tenantry audit purge'); END;
CREATE TABLE IF NOT EXISTS audit_instances (
    instance TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started REAL NOT NULL,
    heartbeat REAL NOT NULL,
    low_water REAL NOT NULL DEFAULT 0
);
CREATE TRIGGER IF NOT EXISTS audit_checkpoints_append_only
BEFORE UPDATE ON audit_checkpoints
BEGIN SELECT RAISE(ABORT, 'audit checkpoints are append-only'); END;
"""


class SqliteAuditStore:
    """Thread-safe; one connection. Several processes may append (the CLI and the server):
    each append reads the stream heads inside its own ``BEGIN IMMEDIATE`` transaction.

    :param busy_timeout: seconds to wait for another writer before failing (closed).
    """

    def __init__(self, path: Path, *, busy_timeout: float = 2.0) -> None:
        self._path = path
        self._lock = threading.Lock()
        deadline = time.monotonic() + busy_timeout
        while True:
            try:
                self._open(path, busy_timeout)
                return
            except sqlite3.OperationalError as exc:
                # Switching to WAL does not wait on the busy handler: another process opening
                # the same file at this moment makes it fail at once, so retry until the timeout.
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise AuditUnavailable(f"cannot open the audit store: {exc}") from None
                time.sleep(0.02)
            except sqlite3.Error as exc:
                raise AuditUnavailable(f"cannot open the audit store: {exc}") from None

    def _open(self, path: Path, busy_timeout: float) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=busy_timeout)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            with self._lock:
                conn.executescript(_SCHEMA)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        conn = self._conn
        with self._lock:
            cursor = conn.cursor()
            try:
                cursor.execute("BEGIN IMMEDIATE")
                yield cursor
                cursor.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise AuditUnavailable(f"the audit store cannot record: {exc}") from None
                raise
            finally:
                cursor.close()

    def append(self, events: Sequence[AuditEvent]) -> list[StoredRecord]:
        if not events:
            return []
        with self._transaction() as cursor:
            return self._append(cursor, events)

    @staticmethod
    def _append(cursor: sqlite3.Cursor, events: Sequence[AuditEvent]) -> list[StoredRecord]:
        stored: list[StoredRecord] = []
        tenants = sorted({event.tenant_id for event in events})
        heads: dict[str, tuple[int, bytes]] = {}
        for tenant_id in tenants:
            row = cursor.execute("SELECT seq, hash FROM audit_heads WHERE tenant_id = ?", (tenant_id,)).fetchone()
            heads[tenant_id] = (int(row[0]), bytes(row[1])) if row else (0, genesis(tenant_id))
        for event in events:
            seq, previous = heads[event.tenant_id]
            seq += 1
            record = encode_record(event, seq)
            digest = link(previous, record)
            heads[event.tenant_id] = (seq, digest)
            stored.append(StoredRecord(event.tenant_id, seq, record, digest, event.created))
        rows = [(r.tenant_id, r.seq, r.record, r.hash, r.created) for r in stored]
        insert = "INSERT INTO audit_records (tenant_id, seq, record, hash, created) VALUES (?, ?, ?, ?, ?)"
        if len(rows) == 1:
            cursor.execute(insert, rows[0])  # a trigger advances audit_heads
        else:
            cursor.executemany(insert, rows)
        return stored

    # -- call journal -----------------------------------------------------------------------

    def register_instance(self, instance: ServerInstance) -> None:
        with self._transaction() as cursor:
            cursor.execute(
                "INSERT OR REPLACE INTO audit_instances (instance, host, pid, started, heartbeat, low_water)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    instance.instance,
                    instance.host,
                    instance.pid,
                    instance.started,
                    instance.heartbeat,
                    instance.started,
                ),
            )

    def heartbeat(self, instance: str, now: float, low_water: float) -> None:
        with self._transaction() as cursor:
            cursor.execute(
                "UPDATE audit_instances SET heartbeat = ?, low_water = ? WHERE instance = ?", (now, low_water, instance)
            )

    def instances(self) -> list[ServerInstance]:
        with self._read() as cursor:
            rows = cursor.execute(
                "SELECT instance, host, pid, started, heartbeat, low_water FROM audit_instances"
            ).fetchall()
        return [ServerInstance(str(i), str(h), int(p), float(s), float(b), float(w)) for i, h, p, s, b, w in rows]

    def records_since(self, created: float) -> Iterator[StoredRecord]:
        reader = sqlite3.connect(self._path, check_same_thread=False)
        try:
            cursor = reader.execute(
                "SELECT tenant_id, seq, record, hash, created FROM audit_records WHERE created >= ? ORDER BY created",
                (created,),
            )
            while rows := cursor.fetchmany(5_000):
                for t, q, r, h, c in rows:
                    yield StoredRecord(str(t), int(q), _bytes(r), _bytes(h), float(c))
        except sqlite3.Error as exc:
            raise AuditUnavailable(f"cannot read the audit store: {exc}") from None
        finally:
            reader.close()

    def retire_instance(self, instance: str) -> None:
        with self._transaction() as cursor:
            cursor.execute("DELETE FROM audit_instances WHERE instance = ?", (instance,))

    def heads(self) -> dict[str, tuple[int, bytes]]:
        with self._read() as cursor:
            rows = cursor.execute("SELECT tenant_id, seq, hash FROM audit_heads").fetchall()
        return {str(tenant): (int(seq), bytes(digest)) for tenant, seq, digest in rows}

    def streams(self) -> list[str]:
        with self._read() as cursor:
            rows = cursor.execute(
                "SELECT tenant_id FROM audit_heads UNION SELECT DISTINCT tenant_id FROM audit_records ORDER BY 1"
            ).fetchall()
        return [str(row[0]) for row in rows]

    def read(self, tenant_id: str, *, after_seq: int = 0) -> Iterator[StoredRecord]:
        # A dedicated read connection: iteration must not hold the writer's lock.
        reader = sqlite3.connect(self._path, check_same_thread=False)
        try:
            cursor = reader.execute(
                "SELECT seq, record, hash, created FROM audit_records WHERE tenant_id = ? AND seq > ? ORDER BY seq",
                (tenant_id, after_seq),
            )
            while True:
                rows = cursor.fetchmany(10_000)
                if not rows:
                    return
                for seq, record, digest, created in rows:
                    yield StoredRecord(tenant_id, int(seq), _bytes(record), _bytes(digest), float(created))
        except sqlite3.Error as exc:
            raise AuditUnavailable(f"cannot read the audit store: {exc}") from None
        finally:
            reader.close()

    def chain(self, tenant_id: str, *, after_seq: int = 0) -> Iterator[tuple[int, bytes, bytes]]:
        reader = sqlite3.connect(self._path, check_same_thread=False)
        try:
            cursor = reader.execute(
                "SELECT seq, record, hash FROM audit_records WHERE tenant_id = ? AND seq > ? ORDER BY seq",
                (tenant_id, after_seq),
            )
            while rows := cursor.fetchmany(10_000):
                yield from rows
        except sqlite3.Error as exc:
            raise AuditUnavailable(f"cannot read the audit store: {exc}") from None
        finally:
            reader.close()

    def recent(self, tenant_id: str | None, limit: int, *, after_created: float | None = None) -> list[StoredRecord]:
        query = "SELECT tenant_id, seq, record, hash, created FROM audit_records"
        clauses: list[str] = []
        params: list[object] = []
        if tenant_id is not None:
            clauses.append("tenant_id = ?")
            params.append(tenant_id)
        if after_created is not None:
            clauses.append("created > ?")
            params.append(after_created)
        if clauses:
            query += " WHERE " + " AND ".join(clauses)
        # One stream reads in stream order; all streams interleave by time.
        query += " ORDER BY seq DESC LIMIT ?" if tenant_id is not None else " ORDER BY created DESC, seq DESC LIMIT ?"
        with self._read() as cursor:
            rows = cursor.execute(query, (*params, limit)).fetchall()
        return [StoredRecord(str(t), int(s), _bytes(r), _bytes(h), float(c)) for t, s, r, h, c in reversed(rows)]

    def add_checkpoint(self, checkpoint: StoredCheckpoint) -> None:
        with self._transaction() as cursor:
            cursor.execute(
                "INSERT OR IGNORE INTO audit_checkpoints (tenant_id, seq, kind, hash, created, token)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                checkpoint.as_row(),
            )

    def checkpoints(self, tenant_id: str) -> list[StoredCheckpoint]:
        with self._read() as cursor:
            rows = cursor.execute(
                "SELECT seq, kind, hash, created, token FROM audit_checkpoints WHERE tenant_id = ? ORDER BY seq, kind",
                (tenant_id,),
            ).fetchall()
        return [StoredCheckpoint(tenant_id, int(s), k, bytes(h), float(c), str(t)) for s, k, h, c, t in rows]

    def purge(self, tenant_id: str, before: float, sign: Signer) -> PurgeOutcome | None:
        with self._transaction() as cursor:
            # Never past the first record that is young enough to keep, even if a later one is older.
            first_kept = cursor.execute(
                "SELECT MIN(seq) FROM audit_records WHERE tenant_id = ? AND created >= ?", (tenant_id, before)
            ).fetchone()[0]
            last = cursor.execute("SELECT MAX(seq) FROM audit_records WHERE tenant_id = ?", (tenant_id,)).fetchone()[0]
            through = (first_kept - 1) if first_kept is not None else last
            floor = cursor.execute(
                "SELECT COALESCE(MIN(seq), 0) FROM audit_records WHERE tenant_id = ?", (tenant_id,)
            ).fetchone()[0]
            if through is None or through < max(floor, 1):
                return None
            anchor = cursor.execute(
                "SELECT hash, created FROM audit_records WHERE tenant_id = ? AND seq = ?", (tenant_id, through)
            ).fetchone()
            digest, created = bytes(anchor[0]), float(anchor[1])
            token = sign(tenant_id, through, digest, "purge", created)
            cursor.execute(
                "INSERT OR REPLACE INTO audit_checkpoints (tenant_id, seq, kind, hash, created, token)"
                " VALUES (?, ?, 'purge', ?, ?, ?)",
                (tenant_id, through, digest, created, token),
            )
            cursor.execute(
                "INSERT INTO audit_purges (tenant_id, through_seq) VALUES (?, ?)"
                " ON CONFLICT(tenant_id) DO UPDATE SET through_seq = MAX(through_seq, excluded.through_seq)",
                (tenant_id, through),
            )
            deleted = cursor.execute(
                "DELETE FROM audit_records WHERE tenant_id = ? AND seq <= ?", (tenant_id, through)
            ).rowcount
        return PurgeOutcome(tenant_id, int(through), int(deleted))

    def ping(self) -> None:
        with self._transaction() as cursor:
            cursor.execute("SELECT 1 FROM audit_heads LIMIT 1")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Cursor]:
        with self._lock:
            cursor = self._conn.cursor()
            try:
                yield cursor
            except sqlite3.Error as exc:
                raise AuditUnavailable(f"cannot read the audit store: {exc}") from None
            finally:
                cursor.close()

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _bytes(value: object) -> bytes:
    """Column values as bytes, whatever type a tampered row now holds (verify must not crash)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, memoryview | bytearray):
        return bytes(value)
    return str(value).encode()
