"""PostgreSQL audit store, shared by every replica (schema ``tenantry_audit``).

The application role may only INSERT and SELECT records (``tenantry db init`` grants
exactly that); UPDATE, DELETE and TRUNCATE are refused by privileges and, for the owner
too, by triggers, except DELETE of records an explicit purge (run with the owner's URL)
has released. Appends take a per-tenant advisory lock, so replicas chain one stream in
turn; ``synchronous_commit`` keeps its default (on), so COMMIT returns once WAL is flushed.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql

from tenantry.audit.chain import StoredRecord, encode_record, genesis, link
from tenantry.audit.events import AuditEvent
from tenantry.audit.store.base import PurgeOutcome, ServerInstance, Signer, StoredCheckpoint
from tenantry.core.errors import AuditUnavailable, driver_error_text

__all__ = ["PostgresAuditStore", "AUDIT_SCHEMA_SQL", "audit_grants_sql"]

AUDIT_SCHEMA_SQL = """
CREATE SCHEMA IF NOT EXISTS tenantry_audit;
CREATE TABLE IF NOT EXISTS tenantry_audit.records (
    tenant_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    record BYTEA NOT NULL,
    hash BYTEA NOT NULL,
    created DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (tenant_id, seq)
);
CREATE INDEX IF NOT EXISTS records_created ON tenantry_audit.records (created);
CREATE TABLE IF NOT EXISTS tenantry_audit.heads (
    tenant_id TEXT PRIMARY KEY,
    seq BIGINT NOT NULL,
    hash BYTEA NOT NULL
);
CREATE TABLE IF NOT EXISTS tenantry_audit.checkpoints (
    tenant_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('head', 'purge')),
    hash BYTEA NOT NULL,
    created DOUBLE PRECISION NOT NULL,
    token TEXT NOT NULL,
    PRIMARY KEY (tenant_id, seq, kind)
);
CREATE TABLE IF NOT EXISTS tenantry_audit.purges (
    tenant_id TEXT PRIMARY KEY,
    through_seq BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS tenantry_audit.instances (
    instance TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid BIGINT NOT NULL,
    started DOUBLE PRECISION NOT NULL,
    heartbeat DOUBLE PRECISION NOT NULL,
    low_water DOUBLE PRECISION NOT NULL DEFAULT 0
);
CREATE OR REPLACE FUNCTION tenantry_audit.append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND OLD.seq <= COALESCE(
        (SELECT through_seq FROM tenantry_audit.purges WHERE tenant_id = OLD.tenant_id), 0) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit records are append-only' USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE OR REPLACE FUNCTION tenantry_audit.no_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit records are append-only' USING ERRCODE = 'insufficient_privilege';
END $$;
DROP TRIGGER IF EXISTS records_append_only ON tenantry_audit.records;
CREATE TRIGGER records_append_only BEFORE UPDATE OR DELETE ON tenantry_audit.records
    FOR EACH ROW EXECUTE FUNCTION tenantry_audit.append_only();
DROP TRIGGER IF EXISTS records_no_truncate ON tenantry_audit.records;
CREATE TRIGGER records_no_truncate BEFORE TRUNCATE ON tenantry_audit.records
    FOR EACH STATEMENT EXECUTE FUNCTION tenantry_audit.no_truncate();
"""


def audit_grants_sql(app_role: str) -> str:
    """Privileges of the application role: append and read, never change or remove."""
    role = sql.Identifier(app_role).as_string(None)
    return f"""
GRANT USAGE ON SCHEMA tenantry_audit TO {role};
REVOKE ALL ON ALL TABLES IN SCHEMA tenantry_audit FROM {role};
GRANT SELECT, INSERT ON tenantry_audit.records, tenantry_audit.checkpoints TO {role};
GRANT SELECT, INSERT, UPDATE ON tenantry_audit.heads TO {role};
GRANT SELECT ON tenantry_audit.purges TO {role};
GRANT SELECT, INSERT, UPDATE, DELETE ON tenantry_audit.instances TO {role};
"""


class PostgresAuditStore:
    """Thread-safe; one connection guarded by a lock, reopened after a failure.

    :param statement_timeout: seconds a statement (or a lock wait) may take before the
        write fails, so a stuck database fails calls closed instead of hanging them.
    """

    def __init__(self, url: str, *, statement_timeout: float = 2.0) -> None:
        self._url = url
        self._timeout_ms = int(statement_timeout * 1000)
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        with self._transaction() as cursor:
            cursor.execute(
                "SELECT to_regclass('tenantry_audit.records') IS NOT NULL"
                " AND to_regclass('tenantry_audit.instances') IS NOT NULL"
            )
            row = cursor.fetchone()
            exists = bool(row and row[0])
        if not exists:
            try:
                with self._transaction() as cursor:
                    cursor.execute("SELECT pg_advisory_xact_lock(hashtext('tenantry_audit.schema'))")
                    cursor.execute(AUDIT_SCHEMA_SQL)
            except AuditUnavailable:
                raise AuditUnavailable(
                    "the audit schema is missing or older than this version and this role cannot create it:"
                    " run `tenantry db init`"
                ) from None

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            try:
                self._conn = psycopg.connect(
                    self._url,
                    connect_timeout=max(1, self._timeout_ms // 1000),
                    application_name="tenantry-audit",
                    options=f"-c statement_timeout={self._timeout_ms} -c lock_timeout={self._timeout_ms}",
                )
            except psycopg.Error as exc:
                raise AuditUnavailable(f"cannot connect to the audit database: {driver_error_text(exc)}") from None
        return self._conn

    @contextmanager
    def _transaction(self) -> Iterator[psycopg.Cursor[Any]]:
        with self._lock:
            conn = self._connection()
            try:
                with conn.transaction(), conn.cursor() as cursor:
                    yield cursor
            except psycopg.Error as exc:
                if isinstance(exc, psycopg.OperationalError) or conn.closed:
                    conn.close()
                raise AuditUnavailable(f"the audit store cannot record: {driver_error_text(exc)}") from None

    def append(self, events: Sequence[AuditEvent]) -> list[StoredRecord]:
        if not events:
            return []
        stored: list[StoredRecord] = []
        with self._transaction() as cursor:
            tenants = sorted({event.tenant_id for event in events})
            for tenant_id in tenants:  # sorted: replicas take the locks in one order, no deadlock
                cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"tenantry_audit:{tenant_id}",))
            cursor.execute(
                "SELECT tenant_id, seq, hash FROM tenantry_audit.heads WHERE tenant_id = ANY(%s)", (tenants,)
            )
            heads: dict[str, tuple[int, bytes]] = {t: (0, genesis(t)) for t in tenants}
            for tenant_id, seq, digest in cursor.fetchall():
                heads[tenant_id] = (int(seq), bytes(digest))
            for event in events:
                seq, previous = heads[event.tenant_id]
                seq += 1
                record = encode_record(event, seq)
                digest = link(previous, record)
                heads[event.tenant_id] = (seq, digest)
                stored.append(StoredRecord(event.tenant_id, seq, record, digest, event.created))
            cursor.executemany(
                "INSERT INTO tenantry_audit.records (tenant_id, seq, record, hash, created)"
                " VALUES (%s, %s, %s, %s, %s)",
                [(r.tenant_id, r.seq, r.record, r.hash, r.created) for r in stored],
            )
            cursor.executemany(
                "INSERT INTO tenantry_audit.heads (tenant_id, seq, hash) VALUES (%s, %s, %s)"
                " ON CONFLICT (tenant_id) DO UPDATE SET seq = EXCLUDED.seq, hash = EXCLUDED.hash",
                [(tenant_id, seq, digest) for tenant_id, (seq, digest) in heads.items()],
            )
        return stored

    # -- call journal -----------------------------------------------------------------------

    def register_instance(self, instance: ServerInstance) -> None:
        with self._transaction() as cursor:
            cursor.execute(
                "INSERT INTO tenantry_audit.instances (instance, host, pid, started, heartbeat, low_water)"
                " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (instance) DO UPDATE SET heartbeat = EXCLUDED.heartbeat",
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
                "UPDATE tenantry_audit.instances SET heartbeat = %s, low_water = %s WHERE instance = %s",
                (now, low_water, instance),
            )

    def instances(self) -> list[ServerInstance]:
        with self._transaction() as cursor:
            cursor.execute("SELECT instance, host, pid, started, heartbeat, low_water FROM tenantry_audit.instances")
            rows = cursor.fetchall()
        return [ServerInstance(str(i), str(h), int(p), float(s), float(b), float(w)) for i, h, p, s, b, w in rows]

    def records_since(self, created: float) -> Iterator[StoredRecord]:
        try:
            with (
                psycopg.connect(self._url, application_name="tenantry-audit-reader") as reader,
                reader.cursor(name="audit_since") as cursor,
            ):
                cursor.itersize = 5_000
                cursor.execute(
                    "SELECT tenant_id, seq, record, hash, created FROM tenantry_audit.records"
                    " WHERE created >= %s ORDER BY created",
                    (created,),
                )
                for t, q, r, h, c in cursor:
                    yield StoredRecord(str(t), int(q), bytes(r), bytes(h), float(c))
        except psycopg.Error as exc:
            raise AuditUnavailable(f"cannot read the audit store: {driver_error_text(exc)}") from None

    def retire_instance(self, instance: str) -> None:
        with self._transaction() as cursor:
            cursor.execute("DELETE FROM tenantry_audit.instances WHERE instance = %s", (instance,))

    def heads(self) -> dict[str, tuple[int, bytes]]:
        with self._transaction() as cursor:
            cursor.execute("SELECT tenant_id, seq, hash FROM tenantry_audit.heads")
            rows = cursor.fetchall()
        return {str(t): (int(s), bytes(h)) for t, s, h in rows}

    def streams(self) -> list[str]:
        with self._transaction() as cursor:
            cursor.execute(
                "SELECT tenant_id FROM tenantry_audit.heads UNION SELECT DISTINCT tenant_id FROM tenantry_audit.records"
                " ORDER BY 1"
            )
            rows = cursor.fetchall()
        return [str(row[0]) for row in rows]

    def read(self, tenant_id: str, *, after_seq: int = 0) -> Iterator[StoredRecord]:
        try:
            with (
                psycopg.connect(self._url, application_name="tenantry-audit-reader") as reader,
                reader.cursor(name="audit_read") as cursor,
            ):
                cursor.itersize = 10_000
                cursor.execute(
                    "SELECT seq, record, hash, created FROM tenantry_audit.records"
                    " WHERE tenant_id = %s AND seq > %s ORDER BY seq",
                    (tenant_id, after_seq),
                )
                for seq, record, digest, created in cursor:
                    yield StoredRecord(tenant_id, int(seq), bytes(record), bytes(digest), float(created))
        except psycopg.Error as exc:
            raise AuditUnavailable(f"cannot read the audit store: {driver_error_text(exc)}") from None

    def chain(self, tenant_id: str, *, after_seq: int = 0) -> Iterator[tuple[int, bytes, bytes]]:
        for stored in self.read(tenant_id, after_seq=after_seq):
            yield stored.seq, stored.record, stored.hash

    def recent(self, tenant_id: str | None, limit: int, *, after_created: float | None = None) -> list[StoredRecord]:
        clauses: list[str] = []
        params: list[object] = []
        if tenant_id is not None:
            clauses.append("tenant_id = %s")
            params.append(tenant_id)
        if after_created is not None:
            clauses.append("created > %s")
            params.append(after_created)
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        with self._transaction() as cursor:
            cursor.execute(
                "SELECT tenant_id, seq, record, hash, created FROM tenantry_audit.records"  # noqa: S608 - fixed clauses
                f"{where} ORDER BY {'seq' if tenant_id is not None else 'created'} DESC, seq DESC LIMIT %s",
                (*params, limit),
            )
            rows = cursor.fetchall()
        return [StoredRecord(str(t), int(s), bytes(r), bytes(h), float(c)) for t, s, r, h, c in reversed(rows)]

    def add_checkpoint(self, checkpoint: StoredCheckpoint) -> None:
        with self._transaction() as cursor:
            cursor.execute(
                "INSERT INTO tenantry_audit.checkpoints (tenant_id, seq, kind, hash, created, token)"
                " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                checkpoint.as_row(),
            )

    def checkpoints(self, tenant_id: str) -> list[StoredCheckpoint]:
        with self._transaction() as cursor:
            cursor.execute(
                "SELECT seq, kind, hash, created, token FROM tenantry_audit.checkpoints WHERE tenant_id = %s"
                " ORDER BY seq, kind",
                (tenant_id,),
            )
            rows = cursor.fetchall()
        return [StoredCheckpoint(tenant_id, int(s), k, bytes(h), float(c), str(t)) for s, k, h, c, t in rows]

    def purge(self, tenant_id: str, before: float, sign: Signer) -> PurgeOutcome | None:
        with self._transaction() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"tenantry_audit:{tenant_id}",))
            # Never past the first record that is young enough to keep, even if a later one is older.
            cursor.execute(
                "SELECT MIN(seq) FILTER (WHERE created >= %s), MIN(seq), MAX(seq) FROM tenantry_audit.records"
                " WHERE tenant_id = %s",
                (before, tenant_id),
            )
            bounds = cursor.fetchone()
            assert bounds is not None  # an aggregate always returns a row
            first_kept, floor, last = bounds
            through = (first_kept - 1) if first_kept is not None else last
            if through is None or floor is None or through < floor:
                return None
            cursor.execute(
                "SELECT hash, created FROM tenantry_audit.records WHERE tenant_id = %s AND seq = %s",
                (tenant_id, through),
            )
            row = cursor.fetchone()
            assert row is not None  # through is a seq that exists
            through, digest, created = int(through), bytes(row[0]), float(row[1])
            token = sign(tenant_id, through, digest, "purge", created)
            cursor.execute(
                "INSERT INTO tenantry_audit.checkpoints (tenant_id, seq, kind, hash, created, token)"
                " VALUES (%s, %s, 'purge', %s, %s, %s) ON CONFLICT DO NOTHING",
                (tenant_id, through, digest, created, token),
            )
            cursor.execute(
                "INSERT INTO tenantry_audit.purges (tenant_id, through_seq) VALUES (%s, %s)"
                " ON CONFLICT (tenant_id) DO UPDATE SET through_seq = GREATEST(tenantry_audit.purges.through_seq,"
                " EXCLUDED.through_seq)",
                (tenant_id, through),
            )
            cursor.execute(
                "DELETE FROM tenantry_audit.records WHERE tenant_id = %s AND seq <= %s", (tenant_id, through)
            )
            deleted = cursor.rowcount
        return PurgeOutcome(tenant_id, through, int(deleted))

    def ping(self) -> None:
        with self._transaction() as cursor:
            cursor.execute("SELECT 1 FROM tenantry_audit.heads LIMIT 1")

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
