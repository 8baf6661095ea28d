"""PostgreSQL control plane, shared by every replica and CLI of a deployment.

Tables live in the schema ``tenantry`` of the configured database. Every write bumps a
revision counter in the same transaction, which readers poll to refresh their view.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import errors as pg_errors

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
from tenantry.controlplane.upstream_queries import POSTGRES_UPSTREAMS as _UPSTREAMS
from tenantry.controlplane.upstream_queries import upstream_from_row
from tenantry.core.credentials import ApiKeyRecord, Revocation
from tenantry.core.errors import AlreadyExists, NotFound, SecretsUnavailable, StorageError, driver_error_text
from tenantry.core.ids import validate_tenant_id, validate_tool_name
from tenantry.core.secrets import SecretInfo, WrappedKey
from tenantry.core.upstreams import UpstreamSpec

__all__ = ["PostgresTenantStore", "CONTROLPLANE_SCHEMA_SQL"]

CONTROLPLANE_SCHEMA_SQL = (
    """
CREATE SCHEMA IF NOT EXISTS tenantry;
CREATE TABLE IF NOT EXISTS tenantry.tenants (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    tier TEXT NOT NULL CHECK (tier IN ('logical', 'dedicated')),
    status TEXT NOT NULL CHECK (status IN ('active', 'halted')),
    halted_reason TEXT,
    created_at BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS tenantry.grants (
    tenant_id TEXT NOT NULL REFERENCES tenantry.tenants(id) ON DELETE CASCADE,
    tool TEXT NOT NULL,
    PRIMARY KEY (tenant_id, tool)
);
CREATE TABLE IF NOT EXISTS tenantry.tenant_limits (
    tenant_id TEXT NOT NULL REFERENCES tenantry.tenants(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    value DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (tenant_id, name)
);
CREATE TABLE IF NOT EXISTS tenantry.meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
INSERT INTO tenantry.meta (key, value) VALUES ('revision', '0') ON CONFLICT (key) DO NOTHING;
CREATE TABLE IF NOT EXISTS tenantry.revocations (
    id BIGSERIAL PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('jti', 'subject', 'tenant')),
    tenant_id TEXT,
    subject TEXT,
    jti TEXT,
    cutoff BIGINT,
    reason TEXT,
    actor TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS revocations_expiry ON tenantry.revocations (expires_at);
CREATE TABLE IF NOT EXISTS tenantry.api_keys (
    key_id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenantry.tenants(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    tools TEXT NOT NULL,
    salt BYTEA NOT NULL,
    secret_hash BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    revoked_at BIGINT,
    created_by TEXT
);
CREATE INDEX IF NOT EXISTS api_keys_tenant ON tenantry.api_keys (tenant_id);
CREATE TABLE IF NOT EXISTS tenantry.tenant_data_keys (
    tenant_id TEXT PRIMARY KEY REFERENCES tenantry.tenants(id) ON DELETE CASCADE,
    key_id TEXT NOT NULL,
    wrapped BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS tenantry.secrets (
    tenant_id TEXT NOT NULL REFERENCES tenantry.tenants(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    sealed BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, name)
);
"""
    + _UPSTREAMS.create
)

_INSERT_REVOCATION = (
    "INSERT INTO tenantry.revocations (kind, tenant_id, subject, jti, cutoff, reason, actor, created_at, expires_at)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
_SELECT_REVOCATIONS = (
    "SELECT kind, tenant_id, subject, jti, cutoff, reason, actor, created_at, expires_at"
    " FROM tenantry.revocations WHERE expires_at > %s ORDER BY id"
)
_INSERT_API_KEY = (
    "INSERT INTO tenantry.api_keys"
    " (key_id, tenant_id, name, tools, salt, secret_hash, created_at, expires_at, revoked_at, created_by)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
_SELECT_API_KEYS = (
    "SELECT key_id, tenant_id, name, tools, salt, secret_hash, created_at, expires_at, revoked_at, created_by"
    " FROM tenantry.api_keys"
)


_TABLES = (
    "tenants",
    "grants",
    "tenant_limits",
    "meta",
    "revocations",
    "api_keys",
    "tenant_data_keys",
    "secrets",
    "upstreams",
)


class PostgresTenantStore:
    """Thread-safe; one connection guarded by a lock, reconnected after a failure."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        with self._tx() as cur:
            cur.execute(
                "SELECT to_regclass(t) IS NULL FROM unnest(%s::text[]) AS t",
                ([f"tenantry.{table}" for table in _TABLES],),
            )
            missing = any(row[0] for row in cur.fetchall())
        if missing:
            # First start on an empty database (or after an upgrade that added tables): create the
            # schema. With separate roles this needs the owner: `tenantry db init` does it.
            try:
                with self._tx() as cur:
                    cur.execute("SELECT pg_advisory_xact_lock(hashtext('tenantry.controlplane.schema'))")
                    cur.execute(CONTROLPLANE_SCHEMA_SQL)
            except StorageError as exc:
                raise StorageError(
                    f"the control-plane schema is missing or outdated and this role cannot create it ({exc.message});"
                    " run `tenantry db init` as the database owner"
                ) from None

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            try:
                self._conn = psycopg.connect(self._url, connect_timeout=5, application_name="tenantry-controlplane")
            except psycopg.Error as exc:
                raise StorageError(f"cannot connect to the control-plane database: {driver_error_text(exc)}") from None
        return self._conn

    @contextmanager
    def _tx(self) -> Iterator[psycopg.Cursor[Any]]:
        with self._lock:
            conn = self._connection()
            try:
                with conn.transaction(), conn.cursor() as cur:
                    yield cur
            except psycopg.OperationalError as exc:
                conn.close()
                raise StorageError(f"control-plane database unavailable: {driver_error_text(exc)}") from None
            except pg_errors.UniqueViolation:
                raise
            except psycopg.Error as exc:
                raise StorageError(f"control-plane database error: {driver_error_text(exc)}") from None

    @staticmethod
    def _bump(cur: psycopg.Cursor[Any]) -> None:
        cur.execute("UPDATE tenantry.meta SET value = (value::bigint + 1)::text WHERE key = 'revision'")

    def create_tenant(
        self, tenant_id: str, *, name: str | None = None, tools: Iterable[str] = (), tier: Tier = "logical"
    ) -> Tenant:
        validate_tenant_id(tenant_id)
        tool_list = sorted({validate_tool_name(t) for t in tools})
        try:
            with self._tx() as cur:
                cur.execute(
                    "INSERT INTO tenantry.tenants (id, name, tier, status, created_at)"
                    " VALUES (%s, %s, %s, 'active', %s)",
                    (tenant_id, name or tenant_id, tier, int(time.time())),
                )
                cur.executemany(
                    "INSERT INTO tenantry.grants (tenant_id, tool) VALUES (%s, %s)", [(tenant_id, t) for t in tool_list]
                )
                self._bump(cur)
        except pg_errors.UniqueViolation:
            raise AlreadyExists(f"tenant {tenant_id!r} already exists") from None
        return self._require(tenant_id)

    def create_tenants(self, tenants: Sequence[TenantSpec]) -> int:
        now = int(time.time())
        try:
            with self._tx() as cur:
                cur.execute("SELECT id FROM tenantry.tenants WHERE id = ANY(%s) LIMIT 1", ([t.id for t in tenants],))
                existing = cur.fetchone()
                if existing is not None:
                    raise AlreadyExists(f"tenant {existing[0]!r} already exists")
                cur.executemany(
                    "INSERT INTO tenantry.tenants (id, name, tier, status, created_at)"
                    " VALUES (%s, %s, %s, 'active', %s)",
                    [(t.id, t.name, t.tier, now) for t in tenants],
                )
                cur.executemany(
                    "INSERT INTO tenantry.grants (tenant_id, tool) VALUES (%s, %s)",
                    [(t.id, tool) for t in tenants for tool in sorted(set(t.tools))],
                )
                self._bump(cur)
        except pg_errors.UniqueViolation:
            raise AlreadyExists("a tenant id appears twice") from None
        return len(tenants)

    def get_tenant(self, tenant_id: str) -> Tenant | None:
        with self._tx() as cur:
            cur.execute(
                "SELECT id, name, tier, status, created_at, halted_reason FROM tenantry.tenants WHERE id = %s",
                (tenant_id,),
            )
            row = cur.fetchone()
            if row is None:
                return None
            cur.execute("SELECT tool FROM tenantry.grants WHERE tenant_id = %s", (tenant_id,))
            grants = frozenset(r[0] for r in cur.fetchall())
            cur.execute(
                "SELECT name, value FROM tenantry.tenant_limits WHERE tenant_id = %s ORDER BY name", (tenant_id,)
            )
            limits = tuple((str(n), float(v)) for n, v in cur.fetchall())
        return _tenant(row, grants, limits)

    def list_tenants(self) -> list[Tenant]:
        with self._tx() as cur:
            cur.execute("SELECT id, name, tier, status, created_at, halted_reason FROM tenantry.tenants ORDER BY id")
            rows = cur.fetchall()
            cur.execute("SELECT tenant_id, tool FROM tenantry.grants")
            grants: dict[str, set[str]] = {}
            for tenant_id, tool in cur.fetchall():
                grants.setdefault(tenant_id, set()).add(tool)
            cur.execute("SELECT tenant_id, name, value FROM tenantry.tenant_limits ORDER BY name")
            limits: dict[str, list[tuple[str, float]]] = {}
            for tenant_id, name, value in cur.fetchall():
                limits.setdefault(tenant_id, []).append((str(name), float(value)))
        return [_tenant(row, frozenset(grants.get(row[0], ())), tuple(limits.get(row[0], ()))) for row in rows]

    def grant(self, tenant_id: str, tools: Iterable[str]) -> Tenant:
        tool_list = sorted({validate_tool_name(t) for t in tools})
        with self._write_existing(tenant_id) as cur:
            cur.executemany(
                "INSERT INTO tenantry.grants (tenant_id, tool) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                [(tenant_id, t) for t in tool_list],
            )
        return self._require(tenant_id)

    def ungrant(self, tenant_id: str, tools: Iterable[str]) -> Tenant:
        with self._write_existing(tenant_id) as cur:
            cur.executemany(
                "DELETE FROM tenantry.grants WHERE tenant_id = %s AND tool = %s",
                [(tenant_id, t) for t in sorted(set(tools))],
            )
        return self._require(tenant_id)

    def set_status(self, tenant_id: str, status: TenantStatus, reason: str | None = None) -> Tenant:
        with self._write_existing(tenant_id) as cur:
            cur.execute(
                "UPDATE tenantry.tenants SET status = %s, halted_reason = %s WHERE id = %s", (status, reason, tenant_id)
            )
        return self._require(tenant_id)

    def set_tier(self, tenant_id: str, tier: Tier) -> Tenant:
        with self._write_existing(tenant_id) as cur:
            cur.execute("UPDATE tenantry.tenants SET tier = %s WHERE id = %s", (tier, tenant_id))
        return self._require(tenant_id)

    def set_limits(self, tenant_id: str, values: Mapping[str, float], clear: Iterable[str] = ()) -> Tenant:
        with self._write_existing(tenant_id) as cur:
            cur.executemany(
                "INSERT INTO tenantry.tenant_limits (tenant_id, name, value) VALUES (%s, %s, %s)"
                " ON CONFLICT (tenant_id, name) DO UPDATE SET value = EXCLUDED.value",
                [(tenant_id, name, float(value)) for name, value in sorted(values.items())],
            )
            cur.executemany(
                "DELETE FROM tenantry.tenant_limits WHERE tenant_id = %s AND name = %s",
                [(tenant_id, n) for n in sorted(set(clear))],
            )
        return self._require(tenant_id)

    @contextmanager
    def _write_existing(self, tenant_id: str) -> Iterator[psycopg.Cursor[Any]]:
        with self._tx() as cur:
            cur.execute("SELECT 1 FROM tenantry.tenants WHERE id = %s FOR UPDATE", (tenant_id,))
            if cur.fetchone() is None:
                raise NotFound(f"no tenant {tenant_id!r}")
            yield cur
            self._bump(cur)

    def _require(self, tenant_id: str) -> Tenant:
        tenant = self.get_tenant(tenant_id)
        if tenant is None:
            raise NotFound(f"no tenant {tenant_id!r}")
        return tenant

    def revision(self) -> int:
        with self._tx() as cur:
            cur.execute("SELECT value FROM tenantry.meta WHERE key = 'revision'")
            row = cur.fetchone()
        return int(row[0]) if row else 0

    def get_meta(self, key: str) -> str | None:
        with self._tx() as cur:
            cur.execute("SELECT value FROM tenantry.meta WHERE key = %s", (f"x:{key}",))
            row = cur.fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        with self._tx() as cur:
            cur.execute(
                "INSERT INTO tenantry.meta (key, value) VALUES (%s, %s)"
                " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                (f"x:{key}", value),
            )

    def list_meta(self, prefix: str) -> dict[str, str]:
        stored = f"x:{prefix}"
        with self._tx() as cur:
            cur.execute("SELECT key, value FROM tenantry.meta WHERE left(key, %s) = %s", (len(stored), stored))
            rows = cur.fetchall()
        return {str(key)[2:]: str(value) for key, value in rows}

    # -- revocations ------------------------------------------------------------------------

    def add_revocation(self, revocation: Revocation) -> None:
        with self._tx() as cur:
            cur.execute(_INSERT_REVOCATION, revocation_row(revocation))
            self._bump(cur)

    def list_revocations(self, now: int) -> list[Revocation]:
        with self._tx() as cur:
            rows = cur.execute(_SELECT_REVOCATIONS, (now,)).fetchall()
        return [revocation_from_row(row) for row in rows]

    def prune_revocations(self, now: int) -> int:
        with self._tx() as cur:
            cur.execute("DELETE FROM tenantry.revocations WHERE expires_at <= %s", (now,))
            return cur.rowcount

    # -- API keys ---------------------------------------------------------------------------

    def add_api_key(self, record: ApiKeyRecord) -> None:
        try:
            with self._tx() as cur:
                cur.execute("SELECT 1 FROM tenantry.tenants WHERE id = %s FOR SHARE", (record.tenant_id,))
                if cur.fetchone() is None:
                    raise NotFound(f"no tenant {record.tenant_id!r}")
                cur.execute(_INSERT_API_KEY, api_key_row(record))
                self._bump(cur)
        except pg_errors.UniqueViolation:
            raise AlreadyExists("an API key with this id already exists") from None

    def get_api_key(self, key_id: str) -> ApiKeyRecord | None:
        with self._tx() as cur:
            row = cur.execute(_SELECT_API_KEYS + " WHERE key_id = %s", (key_id,)).fetchone()
        return None if row is None else api_key_from_row(row)

    def list_api_keys(self, tenant_id: str | None = None) -> list[ApiKeyRecord]:
        with self._tx() as cur:
            if tenant_id is None:
                rows = cur.execute(_SELECT_API_KEYS + " ORDER BY created_at, key_id").fetchall()
            else:
                rows = cur.execute(
                    _SELECT_API_KEYS + " WHERE tenant_id = %s ORDER BY created_at, key_id", (tenant_id,)
                ).fetchall()
        return [api_key_from_row(row) for row in rows]

    def revoke_api_key(self, key_id: str, at: int) -> ApiKeyRecord:
        with self._tx() as cur:
            cur.execute(
                "UPDATE tenantry.api_keys SET revoked_at = COALESCE(revoked_at, %s) WHERE key_id = %s", (at, key_id)
            )
            if cur.rowcount == 0:
                raise NotFound(f"no API key {key_id!r}")
            self._bump(cur)
        record = self.get_api_key(key_id)
        assert record is not None
        return record

    # -- upstreams (gateway mode) -------------------------------------------------------------

    def add_upstream(self, spec: UpstreamSpec) -> None:
        try:
            with self._tx() as cur:
                cur.execute(_UPSTREAMS.insert, (spec.name, spec.to_json(), spec.created_at))
                self._bump(cur)
        except pg_errors.UniqueViolation:
            raise AlreadyExists(f"upstream {spec.name!r} already exists") from None

    def list_upstreams(self) -> list[UpstreamSpec]:
        with self._tx() as cur:
            rows = cur.execute(_UPSTREAMS.select_all).fetchall()
        return [upstream_from_row(row) for row in rows]

    def remove_upstream(self, name: str) -> bool:
        with self._tx() as cur:
            cur.execute(_UPSTREAMS.delete, (name,))
            removed = cur.rowcount > 0
            if removed:
                self._bump(cur)
        return removed

    # -- secrets (sealed values and wrapped data keys; no revision bump: read at call time) ----

    def put_secret(self, tenant_id: str, name: str, sealed: bytes, now: int) -> bool:
        with self._tx() as cur:
            cur.execute("SELECT 1 FROM tenantry.tenants WHERE id = %s FOR SHARE", (tenant_id,))
            if cur.fetchone() is None:
                raise NotFound(f"no tenant {tenant_id!r}")
            # FOR SHARE holds off a concurrent shred until this value is stored (and then shredded).
            cur.execute("SELECT 1 FROM tenantry.tenant_data_keys WHERE tenant_id = %s FOR SHARE", (tenant_id,))
            if cur.fetchone() is None:
                raise SecretsUnavailable("the tenant's data key was deleted while the secret was being stored")
            cur.execute(
                "INSERT INTO tenantry.secrets (tenant_id, name, sealed, created_at, updated_at)"
                " VALUES (%s, %s, %s, %s, %s)"
                " ON CONFLICT (tenant_id, name)"
                " DO UPDATE SET sealed = EXCLUDED.sealed, updated_at = EXCLUDED.updated_at"
                " RETURNING (xmax = 0)",
                (tenant_id, name, sealed, now, now),
            )
            row = cur.fetchone()
        return bool(row and row[0])

    def get_secret(self, tenant_id: str, name: str) -> bytes | None:
        with self._tx() as cur:
            row = cur.execute(
                "SELECT sealed FROM tenantry.secrets WHERE tenant_id = %s AND name = %s", (tenant_id, name)
            ).fetchone()
        return None if row is None else bytes(row[0])

    def sealed_secrets(self, tenant_id: str) -> dict[str, bytes]:
        with self._tx() as cur:
            rows = cur.execute(
                "SELECT name, sealed FROM tenantry.secrets WHERE tenant_id = %s", (tenant_id,)
            ).fetchall()
        return {str(name): bytes(sealed) for name, sealed in rows}

    def list_secrets(self, tenant_id: str) -> list[SecretInfo]:
        with self._tx() as cur:
            rows = cur.execute(
                "SELECT name, created_at, updated_at FROM tenantry.secrets WHERE tenant_id = %s ORDER BY name",
                (tenant_id,),
            ).fetchall()
        return [secret_info_from_row(row) for row in rows]

    def delete_secret(self, tenant_id: str, name: str) -> bool:
        with self._tx() as cur:
            cur.execute("DELETE FROM tenantry.secrets WHERE tenant_id = %s AND name = %s", (tenant_id, name))
            return cur.rowcount > 0

    def get_data_key(self, tenant_id: str) -> WrappedKey | None:
        with self._tx() as cur:
            row = cur.execute(
                "SELECT key_id, wrapped, created_at FROM tenantry.tenant_data_keys WHERE tenant_id = %s", (tenant_id,)
            ).fetchone()
        return None if row is None else wrapped_key_from_row(row)

    def put_data_key(self, tenant_id: str, key: WrappedKey) -> WrappedKey:
        with self._tx() as cur:
            cur.execute("SELECT 1 FROM tenantry.tenants WHERE id = %s FOR SHARE", (tenant_id,))
            if cur.fetchone() is None:
                raise NotFound(f"no tenant {tenant_id!r}")
            # A concurrent first writer's INSERT makes this one wait, then do nothing; the SELECT
            # (a new snapshot under READ COMMITTED) then sees the winner's key.
            cur.execute(
                "INSERT INTO tenantry.tenant_data_keys (tenant_id, key_id, wrapped, created_at)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT (tenant_id) DO NOTHING",
                (tenant_id, key.key_id, key.wrapped, key.created_at),
            )
            row = cur.execute(
                "SELECT key_id, wrapped, created_at FROM tenantry.tenant_data_keys WHERE tenant_id = %s", (tenant_id,)
            ).fetchone()
        if row is None:
            raise SecretsUnavailable("the tenant's data key was deleted while it was being created; try again")
        return wrapped_key_from_row(row)

    def delete_data_key(self, tenant_id: str) -> bool:
        with self._tx() as cur:
            # The key first: in PostgreSQL this waits for a writer holding it (FOR SHARE), so
            # the value that writer stored is then seen and deleted too.
            cur.execute("DELETE FROM tenantry.tenant_data_keys WHERE tenant_id = %s", (tenant_id,))
            had_key = cur.rowcount > 0
            cur.execute("DELETE FROM tenantry.secrets WHERE tenant_id = %s", (tenant_id,))
            return had_key

    # -- tenant erasure (see tenantry.controlplane.erase) -------------------------------------

    def erase_tenant(self, tenant_id: str, *, keep_revocations_from: int) -> None:
        with self._tx() as cur:
            for statement, params in erase_statements("tenantry.", "%s"):
                cur.execute(statement, (tenant_id, keep_revocations_from)[:params])
            self._bump(cur)

    def tenant_footprint(self, tenant_id: str) -> dict[str, int]:
        counts: dict[str, int] = {}
        with self._tx() as cur:
            for table, query in footprint_queries("tenantry.", "%s"):
                row = cur.execute(query, (tenant_id,)).fetchone()
                counts[table] = int(row[0]) if row else 0
        return {table: n for table, n in counts.items() if n}

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()


def _tenant(row: tuple[Any, ...], grants: frozenset[str], limits: tuple[tuple[str, float], ...] = ()) -> Tenant:
    tenant_id, name, tier, status, created_at, halted_reason = row
    return Tenant(
        id=str(tenant_id),
        name=str(name),
        tier=tier,
        status=status,
        created_at=int(created_at),
        grants=grants,
        halted_reason=None if halted_reason is None else str(halted_reason),
        limit_overrides=limits,
    )
