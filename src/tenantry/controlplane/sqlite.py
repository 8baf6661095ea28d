"""SQLite control plane (the embedded default): ``<data_dir>/control.sqlite3``."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tenantry.controlplane.base import Tenant, TenantSpec, TenantStatus, Tier
from tenantry.controlplane.erase import erase_statements, footprint_queries
from tenantry.controlplane.rows import (
    api_key_from_row,
    api_key_row,
    revocation_from_row,
    revocation_row,
    secret_info_from_row,
    wrapped_key_from_row,
)
from tenantry.controlplane.upstream_queries import SQLITE_UPSTREAMS as _UPSTREAMS
from tenantry.controlplane.upstream_queries import upstream_from_row
from tenantry.core.credentials import ApiKeyRecord, Revocation
from tenantry.core.errors import AlreadyExists, NotFound, SecretsUnavailable, StorageError
from tenantry.core.ids import validate_tenant_id, validate_tool_name
from tenantry.core.secrets import SecretInfo, WrappedKey
from tenantry.core.upstreams import UpstreamSpec

__all__ = ["SqliteTenantStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tenants (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    tier TEXT NOT NULL CHECK (tier IN ('logical', 'dedicated')),
    status TEXT NOT NULL CHECK (status IN ('active', 'halted')),
    halted_reason TEXT,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS grants (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    tool TEXT NOT NULL,
    PRIMARY KEY (tenant_id, tool)
);
CREATE TABLE IF NOT EXISTS tenant_limits (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY (tenant_id, name)
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
INSERT OR IGNORE INTO meta (key, value) VALUES ('revision', '0');
CREATE TABLE IF NOT EXISTS revocations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL CHECK (kind IN ('jti', 'subject', 'tenant')),
    tenant_id TEXT,
    subject TEXT,
    jti TEXT,
    cutoff INTEGER,
    reason TEXT,
    actor TEXT,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS revocations_expiry ON revocations (expires_at);
CREATE TABLE IF NOT EXISTS api_keys (
    key_id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    tools TEXT NOT NULL,
    salt BLOB NOT NULL,
    secret_hash BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    revoked_at INTEGER,
    created_by TEXT
);
CREATE INDEX IF NOT EXISTS api_keys_tenant ON api_keys (tenant_id);
CREATE TABLE IF NOT EXISTS tenant_data_keys (
    tenant_id TEXT PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
    key_id TEXT NOT NULL,
    wrapped BLOB NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS secrets (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    sealed BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, name)
);
"""

_INSERT_REVOCATION = (
    "INSERT INTO revocations (kind, tenant_id, subject, jti, cutoff, reason, actor, created_at, expires_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_SELECT_REVOCATIONS = (
    "SELECT kind, tenant_id, subject, jti, cutoff, reason, actor, created_at, expires_at"
    " FROM revocations WHERE expires_at > ? ORDER BY id"
)
_INSERT_API_KEY = (
    "INSERT INTO api_keys"
    " (key_id, tenant_id, name, tools, salt, secret_hash, created_at, expires_at, revoked_at, created_by)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_SELECT_API_KEYS = (
    "SELECT key_id, tenant_id, name, tools, salt, secret_hash, created_at, expires_at, revoked_at, created_by"
    " FROM api_keys"
)


class SqliteTenantStore:
    """Thread-safe; one connection guarded by a lock (writes are rare and tiny)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._conn.execute("PRAGMA synchronous=FULL")
            # Deleted rows are overwritten, not left in free pages: a shredded data key must not
            # be recoverable from the database file.
            self._conn.execute("PRAGMA secure_delete=ON")
            with self._lock:
                self._conn.executescript(_SCHEMA + _UPSTREAMS.create)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open control store {path}: {exc}") from None

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Cursor]:
        with self._lock:
            cur = self._conn.cursor()
            try:
                cur.execute("BEGIN IMMEDIATE")
                yield cur
                cur.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    cur.execute("ROLLBACK")
                raise
            finally:
                cur.close()

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Cursor]:
        with self._lock:
            cur = self._conn.cursor()
            try:
                yield cur
            except sqlite3.Error as exc:
                raise StorageError(f"control store read failed: {exc}") from None
            finally:
                cur.close()

    @staticmethod
    def _bump(cur: sqlite3.Cursor) -> None:
        cur.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'revision'")

    def create_tenant(
        self, tenant_id: str, *, name: str | None = None, tools: Iterable[str] = (), tier: Tier = "logical"
    ) -> Tenant:
        validate_tenant_id(tenant_id)
        tool_list = sorted({validate_tool_name(t) for t in tools})
        try:
            with self._tx() as cur:
                cur.execute(
                    "INSERT INTO tenants (id, name, tier, status, created_at) VALUES (?, ?, ?, 'active', ?)",
                    (tenant_id, name or tenant_id, tier, int(time.time())),
                )
                cur.executemany(
                    "INSERT INTO grants (tenant_id, tool) VALUES (?, ?)", [(tenant_id, t) for t in tool_list]
                )
                self._bump(cur)
        except sqlite3.IntegrityError:
            raise AlreadyExists(f"tenant {tenant_id!r} already exists") from None
        except sqlite3.Error as exc:
            raise StorageError(f"control store write failed: {exc}") from None
        return self._require(tenant_id)

    def create_tenants(self, tenants: Sequence[TenantSpec]) -> int:
        now = int(time.time())
        try:
            with self._tx() as cur:
                existing = _first_existing(cur, [t.id for t in tenants], "?")
                if existing is not None:
                    raise AlreadyExists(f"tenant {existing!r} already exists")
                cur.executemany(
                    "INSERT INTO tenants (id, name, tier, status, created_at) VALUES (?, ?, ?, 'active', ?)",
                    [(t.id, t.name, t.tier, now) for t in tenants],
                )
                cur.executemany(
                    "INSERT INTO grants (tenant_id, tool) VALUES (?, ?)",
                    [(t.id, tool) for t in tenants for tool in sorted(set(t.tools))],
                )
                self._bump(cur)
        except sqlite3.IntegrityError:
            raise AlreadyExists("a tenant id appears twice") from None
        except sqlite3.Error as exc:
            raise StorageError(f"control store write failed: {exc}") from None
        return len(tenants)

    def get_tenant(self, tenant_id: str) -> Tenant | None:
        with self._read() as cur:
            row = cur.execute(
                "SELECT id, name, tier, status, created_at, halted_reason FROM tenants WHERE id = ?", (tenant_id,)
            ).fetchone()
            if row is None:
                return None
            grants = frozenset(r[0] for r in cur.execute("SELECT tool FROM grants WHERE tenant_id = ?", (tenant_id,)))
            limits = tuple(
                (str(n), float(v))
                for n, v in cur.execute(
                    "SELECT name, value FROM tenant_limits WHERE tenant_id = ? ORDER BY name", (tenant_id,)
                )
            )
        return _tenant(row, grants, limits)

    def list_tenants(self) -> list[Tenant]:
        with self._read() as cur:
            rows = cur.execute(
                "SELECT id, name, tier, status, created_at, halted_reason FROM tenants ORDER BY id"
            ).fetchall()
            grants: dict[str, set[str]] = {}
            for tenant_id, tool in cur.execute("SELECT tenant_id, tool FROM grants"):
                grants.setdefault(tenant_id, set()).add(tool)
            limits: dict[str, list[tuple[str, float]]] = {}
            for tenant_id, name, value in cur.execute("SELECT tenant_id, name, value FROM tenant_limits ORDER BY name"):
                limits.setdefault(tenant_id, []).append((str(name), float(value)))
        return [_tenant(row, frozenset(grants.get(row[0], ())), tuple(limits.get(row[0], ()))) for row in rows]

    def grant(self, tenant_id: str, tools: Iterable[str]) -> Tenant:
        tool_list = sorted({validate_tool_name(t) for t in tools})
        with self._write_existing(tenant_id) as cur:
            cur.executemany(
                "INSERT OR IGNORE INTO grants (tenant_id, tool) VALUES (?, ?)", [(tenant_id, t) for t in tool_list]
            )
        return self._require(tenant_id)

    def ungrant(self, tenant_id: str, tools: Iterable[str]) -> Tenant:
        tool_list = sorted(set(tools))
        with self._write_existing(tenant_id) as cur:
            cur.executemany("DELETE FROM grants WHERE tenant_id = ? AND tool = ?", [(tenant_id, t) for t in tool_list])
        return self._require(tenant_id)

    def set_status(self, tenant_id: str, status: TenantStatus, reason: str | None = None) -> Tenant:
        with self._write_existing(tenant_id) as cur:
            cur.execute("UPDATE tenants SET status = ?, halted_reason = ? WHERE id = ?", (status, reason, tenant_id))
        return self._require(tenant_id)

    def set_tier(self, tenant_id: str, tier: Tier) -> Tenant:
        with self._write_existing(tenant_id) as cur:
            cur.execute("UPDATE tenants SET tier = ? WHERE id = ?", (tier, tenant_id))
        return self._require(tenant_id)

    def set_limits(self, tenant_id: str, values: Mapping[str, float], clear: Iterable[str] = ()) -> Tenant:
        with self._write_existing(tenant_id) as cur:
            cur.executemany(
                "INSERT INTO tenant_limits (tenant_id, name, value) VALUES (?, ?, ?)"
                " ON CONFLICT (tenant_id, name) DO UPDATE SET value = excluded.value",
                [(tenant_id, name, float(value)) for name, value in sorted(values.items())],
            )
            cur.executemany(
                "DELETE FROM tenant_limits WHERE tenant_id = ? AND name = ?",
                [(tenant_id, n) for n in sorted(set(clear))],
            )
        return self._require(tenant_id)

    @contextmanager
    def _write_existing(self, tenant_id: str) -> Iterator[sqlite3.Cursor]:
        try:
            with self._tx() as cur:
                if cur.execute("SELECT 1 FROM tenants WHERE id = ?", (tenant_id,)).fetchone() is None:
                    raise NotFound(f"no tenant {tenant_id!r}")
                yield cur
                self._bump(cur)
        except sqlite3.Error as exc:
            raise StorageError(f"control store write failed: {exc}") from None

    def _require(self, tenant_id: str) -> Tenant:
        tenant = self.get_tenant(tenant_id)
        if tenant is None:
            raise NotFound(f"no tenant {tenant_id!r}")
        return tenant

    def revision(self) -> int:
        with self._read() as cur:
            row = cur.execute("SELECT value FROM meta WHERE key = 'revision'").fetchone()
        return int(row[0])

    def get_meta(self, key: str) -> str | None:
        with self._read() as cur:
            row = cur.execute("SELECT value FROM meta WHERE key = ?", (f"x:{key}",)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        try:
            with self._tx() as cur:
                cur.execute(
                    "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    (f"x:{key}", value),
                )
        except sqlite3.Error as exc:
            raise StorageError(f"control store write failed: {exc}") from None

    def list_meta(self, prefix: str) -> dict[str, str]:
        stored = f"x:{prefix}"
        with self._read() as cur:
            rows = cur.execute(
                "SELECT key, value FROM meta WHERE substr(key, 1, ?) = ?", (len(stored), stored)
            ).fetchall()
        return {str(key)[2:]: str(value) for key, value in rows}

    # -- revocations ------------------------------------------------------------------------

    def add_revocation(self, revocation: Revocation) -> None:
        with self._write() as cur:
            cur.execute(_INSERT_REVOCATION, revocation_row(revocation))

    def list_revocations(self, now: int) -> list[Revocation]:
        with self._read() as cur:
            rows = cur.execute(_SELECT_REVOCATIONS, (now,)).fetchall()
        return [revocation_from_row(row) for row in rows]

    def prune_revocations(self, now: int) -> int:
        with self._write(bump=False) as cur:
            cur.execute("DELETE FROM revocations WHERE expires_at <= ?", (now,))
            return cur.rowcount

    # -- API keys ---------------------------------------------------------------------------

    def add_api_key(self, record: ApiKeyRecord) -> None:
        try:
            with self._write() as cur:
                if cur.execute("SELECT 1 FROM tenants WHERE id = ?", (record.tenant_id,)).fetchone() is None:
                    raise NotFound(f"no tenant {record.tenant_id!r}")
                cur.execute(_INSERT_API_KEY, api_key_row(record))
        except sqlite3.IntegrityError:
            raise AlreadyExists("an API key with this id already exists") from None

    def get_api_key(self, key_id: str) -> ApiKeyRecord | None:
        with self._read() as cur:
            row = cur.execute(_SELECT_API_KEYS + " WHERE key_id = ?", (key_id,)).fetchone()
        return None if row is None else api_key_from_row(row)

    def list_api_keys(self, tenant_id: str | None = None) -> list[ApiKeyRecord]:
        with self._read() as cur:
            if tenant_id is None:
                rows = cur.execute(_SELECT_API_KEYS + " ORDER BY created_at, key_id").fetchall()
            else:
                rows = cur.execute(
                    _SELECT_API_KEYS + " WHERE tenant_id = ? ORDER BY created_at, key_id", (tenant_id,)
                ).fetchall()
        return [api_key_from_row(row) for row in rows]

    def revoke_api_key(self, key_id: str, at: int) -> ApiKeyRecord:
        with self._write() as cur:
            cur.execute("UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE key_id = ?", (at, key_id))
            if cur.rowcount == 0:
                raise NotFound(f"no API key {key_id!r}")
        record = self.get_api_key(key_id)
        assert record is not None
        return record

    # -- upstreams (gateway mode) -------------------------------------------------------------

    def add_upstream(self, spec: UpstreamSpec) -> None:
        try:
            with self._write() as cur:
                cur.execute(_UPSTREAMS.insert, (spec.name, spec.to_json(), spec.created_at))
        except sqlite3.IntegrityError:
            raise AlreadyExists(f"upstream {spec.name!r} already exists") from None

    def list_upstreams(self) -> list[UpstreamSpec]:
        with self._read() as cur:
            rows = cur.execute(_UPSTREAMS.select_all).fetchall()
        return [upstream_from_row(row) for row in rows]

    def remove_upstream(self, name: str) -> bool:
        with self._write() as cur:
            cur.execute(_UPSTREAMS.delete, (name,))
            return cur.rowcount > 0

    # -- secrets (sealed values and wrapped data keys; no revision bump: read at call time) ----

    def put_secret(self, tenant_id: str, name: str, sealed: bytes, now: int) -> bool:
        with self._write(bump=False) as cur:
            if cur.execute("SELECT 1 FROM tenants WHERE id = ?", (tenant_id,)).fetchone() is None:
                raise NotFound(f"no tenant {tenant_id!r}")
            if cur.execute("SELECT 1 FROM tenant_data_keys WHERE tenant_id = ?", (tenant_id,)).fetchone() is None:
                raise SecretsUnavailable("the tenant's data key was deleted while the secret was being stored")
            existed = cur.execute(
                "SELECT 1 FROM secrets WHERE tenant_id = ? AND name = ?", (tenant_id, name)
            ).fetchone()
            cur.execute(
                "INSERT INTO secrets (tenant_id, name, sealed, created_at, updated_at) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (tenant_id, name)"
                " DO UPDATE SET sealed = excluded.sealed, updated_at = excluded.updated_at",
                (tenant_id, name, sealed, now, now),
            )
        return existed is None

    def get_secret(self, tenant_id: str, name: str) -> bytes | None:
        with self._read() as cur:
            row = cur.execute(
                "SELECT sealed FROM secrets WHERE tenant_id = ? AND name = ?", (tenant_id, name)
            ).fetchone()
        return None if row is None else bytes(row[0])

    def sealed_secrets(self, tenant_id: str) -> dict[str, bytes]:
        with self._read() as cur:
            rows = cur.execute("SELECT name, sealed FROM secrets WHERE tenant_id = ?", (tenant_id,)).fetchall()
        return {str(name): bytes(sealed) for name, sealed in rows}

    def list_secrets(self, tenant_id: str) -> list[SecretInfo]:
        with self._read() as cur:
            rows = cur.execute(
                "SELECT name, created_at, updated_at FROM secrets WHERE tenant_id = ? ORDER BY name", (tenant_id,)
            ).fetchall()
        return [secret_info_from_row(row) for row in rows]

    def delete_secret(self, tenant_id: str, name: str) -> bool:
        with self._write(bump=False) as cur:
            cur.execute("DELETE FROM secrets WHERE tenant_id = ? AND name = ?", (tenant_id, name))
            return cur.rowcount > 0

    def get_data_key(self, tenant_id: str) -> WrappedKey | None:
        with self._read() as cur:
            row = cur.execute(
                "SELECT key_id, wrapped, created_at FROM tenant_data_keys WHERE tenant_id = ?", (tenant_id,)
            ).fetchone()
        return None if row is None else wrapped_key_from_row(row)

    def put_data_key(self, tenant_id: str, key: WrappedKey) -> WrappedKey:
        with self._write(bump=False) as cur:
            if cur.execute("SELECT 1 FROM tenants WHERE id = ?", (tenant_id,)).fetchone() is None:
                raise NotFound(f"no tenant {tenant_id!r}")
            cur.execute(
                "INSERT OR IGNORE INTO tenant_data_keys (tenant_id, key_id, wrapped, created_at) VALUES (?, ?, ?, ?)",
                (tenant_id, key.key_id, key.wrapped, key.created_at),
            )
            row = cur.execute(
                "SELECT key_id, wrapped, created_at FROM tenant_data_keys WHERE tenant_id = ?", (tenant_id,)
            ).fetchone()
        return wrapped_key_from_row(row)

    def delete_data_key(self, tenant_id: str) -> bool:
        with self._write(bump=False) as cur:
            cur.execute("DELETE FROM tenant_data_keys WHERE tenant_id = ?", (tenant_id,))
            had_key = cur.rowcount > 0
            cur.execute("DELETE FROM secrets WHERE tenant_id = ?", (tenant_id,))
        # Older copies of the pages live on in the write-ahead log until a checkpoint.
        self._checkpoint_wal()
        return had_key

    # -- tenant erasure (see tenantry.controlplane.erase) -------------------------------------

    def erase_tenant(self, tenant_id: str, *, keep_revocations_from: int) -> None:
        with self._write() as cur:
            for statement, params in erase_statements("", "?"):
                cur.execute(statement, (tenant_id, keep_revocations_from)[:params])
        self._checkpoint_wal()

    def tenant_footprint(self, tenant_id: str) -> dict[str, int]:
        with self._read() as cur:
            counts = {table: int(cur.execute(q, (tenant_id,)).fetchone()[0]) for table, q in footprint_queries("", "?")}
        return {table: n for table, n in counts.items() if n}

    def _checkpoint_wal(self) -> None:
        """Copy the log into the database and empty it, so that older page images (which
        ``secure_delete`` cannot reach) leave the disk. A reader in another process can keep
        the log busy for a moment: retried a few times, best effort."""
        for _ in range(20):
            with self._read() as cur:
                busy = cur.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            if not busy:
                return
            time.sleep(0.05)

    @contextmanager
    def _write(self, *, bump: bool = True) -> Iterator[sqlite3.Cursor]:
        try:
            with self._tx() as cur:
                yield cur
                if bump:
                    self._bump(cur)
        except sqlite3.IntegrityError:
            raise
        except sqlite3.Error as exc:
            raise StorageError(f"control store write failed: {exc}") from None

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _first_existing(cur: Any, ids: list[str], placeholder: str) -> str | None:
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        marks = ", ".join([placeholder] * len(chunk))
        row = cur.execute(f"SELECT id FROM tenants WHERE id IN ({marks}) LIMIT 1", chunk).fetchone()  # noqa: S608
        if row is not None:
            return str(row[0])
    return None


def _tenant(row: tuple[object, ...], grants: frozenset[str], limits: tuple[tuple[str, float], ...] = ()) -> Tenant:
    tenant_id, name, tier, status, created_at, halted_reason = row
    return Tenant(
        id=str(tenant_id),
        name=str(name),
        tier=tier,  # type: ignore[arg-type]
        status=status,  # type: ignore[arg-type]
        created_at=int(created_at),  # type: ignore[call-overload]
        grants=grants,
        halted_reason=None if halted_reason is None else str(halted_reason),
        limit_overrides=limits,
    )
