"""The database side of ``ctx.sql`` on PostgreSQL: the tenant proof, row-level security, migrations.

How a transaction's tenant is established, and why SQL a tool runs cannot change it:

* Every transaction the handle opens starts with ``set_config('tenantry.tenant_id', T, true)``
  and ``set_config('tenantry.tenant_proof', P, true)`` where ``P = HMAC-SHA256(K, T ":" pid)``,
  ``K`` being a key held by the servers and by the database (table ``tenantry_rls.tenant_key``,
  readable by the owner role only) and ``pid`` the backend process serving the connection.
* Every tenant table has a RESTRICTIVE policy ``tenant_id = (SELECT tenantry_rls.current_tenant())``.
  That SECURITY DEFINER function recomputes the HMAC inside the database and returns ``T`` only
  if the proof matches; otherwise ``NULL``, which matches no row and fails every write check.
* SQL injected into a tool may call ``set_config``, ``SET``, ``RESET`` or ``SET ROLE`` at will:
  without ``K`` it cannot produce another tenant's proof, a proof is useless on another backend,
  and the role it runs as is neither the tables' owner, nor ``BYPASSRLS``, nor a member of any
  role that is (``FORCE ROW LEVEL SECURITY`` holds even for the owner).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from tenantry.core.errors import UsageError

__all__ = [
    "RLS_SCHEMA",
    "TenantProof",
    "install_tenant_proof",
    "secure_tenant_tables",
    "tenant_schema_name",
    "DataRoles",
]

RLS_SCHEMA = "tenantry_rls"
_POLICY = "tenant_isolation"
_ALLOW = "tenant_rows"


class TenantProof:
    """Computes the per-transaction proof of a tenant; holds the shared key."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise UsageError("the SQL tenant key must be at least 32 bytes")
        self._key = key

    def __repr__(self) -> str:
        return "TenantProof(<key>)"

    def for_backend(self, tenant_id: str, backend_pid: int) -> str:
        message = f"{tenant_id}:{backend_pid}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class DataRoles:
    owner: str
    """Owns the tenant tables; runs migrations."""
    tools: str
    """What ``ctx.sql`` connects as: DML on tenant tables only, nothing on the control plane."""


def tenant_schema_name(prefix: str, tenant_id: str) -> str:
    """The schema of one tenant in ``isolation = "schema"`` mode (fits PostgreSQL's 63 bytes)."""
    name = f"{prefix}_{tenant_id}"
    if len(name) > 63:
        digest = hashlib.sha256(tenant_id.encode()).hexdigest()[:12]
        name = f"{prefix}_{tenant_id[: 63 - len(prefix) - 14]}_{digest}"
    return name


def install_tenant_proof(conn: psycopg.Connection[Any], roles: DataRoles, key: bytes) -> None:
    """Create (or update) ``tenantry_rls``: the key table and ``current_tenant()``. Run by a superuser."""
    conn.execute("CREATE EXTENSION IF NOT EXISTS pgcrypto")
    row = conn.execute(
        "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace"
        " WHERE e.extname = 'pgcrypto'"
    ).fetchone()
    assert row is not None
    crypto = sql.Identifier(str(row[0]))
    owner, tools = sql.Identifier(roles.owner), sql.Identifier(roles.tools)
    with conn.transaction():
        conn.execute(sql.SQL("SET LOCAL ROLE {}").format(owner))
        conn.execute(
            sql.SQL(
                "CREATE SCHEMA IF NOT EXISTS tenantry_rls;"
                " REVOKE ALL ON SCHEMA tenantry_rls FROM PUBLIC;"
                " CREATE TABLE IF NOT EXISTS tenantry_rls.tenant_key ("
                "   singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton), key bytea NOT NULL);"
                " REVOKE ALL ON tenantry_rls.tenant_key FROM PUBLIC"
            )
        )
        conn.execute(
            "INSERT INTO tenantry_rls.tenant_key (key) VALUES (%s)"
            " ON CONFLICT (singleton) DO UPDATE SET key = EXCLUDED.key",
            (key,),
        )
        conn.execute(
            sql.SQL(
                """
CREATE OR REPLACE FUNCTION tenantry_rls.current_tenant() RETURNS text
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    claimed text := current_setting('tenantry.tenant_id', true);
    proof text := current_setting('tenantry.tenant_proof', true);
    secret bytea;
BEGIN
    IF claimed IS NULL OR claimed = '' OR proof IS NULL OR proof = '' THEN
        RETURN NULL;
    END IF;
    SELECT k.key INTO secret FROM tenantry_rls.tenant_key AS k;
    IF secret IS NOT NULL AND encode({crypto}.hmac(
            convert_to(claimed || ':' || pg_backend_pid()::text, 'UTF8'), secret, 'sha256'), 'hex') = proof THEN
        RETURN claimed;
    END IF;
    RETURN NULL;
END
$fn$;
REVOKE ALL ON FUNCTION tenantry_rls.current_tenant() FROM PUBLIC;
GRANT USAGE ON SCHEMA tenantry_rls TO {tools};
GRANT EXECUTE ON FUNCTION tenantry_rls.current_tenant() TO {tools};
"""
            ).format(crypto=crypto, tools=tools)
        )


def secure_tenant_tables(conn: psycopg.Connection[Any], schema: str, roles: DataRoles) -> list[str]:
    """Put every table of ``schema`` under tenant isolation; return their names. Run as the owner.

    Each table must have a ``tenant_id text`` column; every index (primary keys included) must
    lead with it, and every unique index must have it among its key columns (otherwise one tenant
    could learn that another holds a value from a unique violation).
    Views become ``security_invoker`` so they cannot lend the owner's rights.

    :raises UsageError: naming the table or index that breaks a rule.
    """
    tables = [
        str(r[0])
        for r in conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relkind IN ('r', 'p') ORDER BY c.relname",
            (schema,),
        ).fetchall()
    ]
    tools = sql.Identifier(roles.tools)
    for table in tables:
        qualified = sql.Identifier(schema, table)
        column = conn.execute(
            "SELECT a.attnum, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a"
            " WHERE a.attrelid = %s::regclass AND a.attname = 'tenant_id' AND NOT a.attisdropped",
            (f'"{schema}"."{table}"',),
        ).fetchone()
        if column is None or column[1] != "text":
            raise UsageError(f"table {schema}.{table} needs a column tenant_id text")
        regclass = f'"{schema}"."{table}"'
        loose = conn.execute(
            "SELECT i.indexrelid::regclass::text FROM pg_index i"
            " WHERE i.indrelid = %s::regclass AND (i.indisunique OR i.indisexclusion)"
            " AND NOT (%s = ANY ((i.indkey::int2[])[0:i.indnkeyatts - 1]))",
            (regclass, column[0]),
        ).fetchone()
        if loose is not None:
            raise UsageError(
                f"unique or exclusion index {loose[0]} on {schema}.{table} must have tenant_id among its key"
                " columns (otherwise a violation reveals another tenant's values)"
            )
        # An index scan visits entries before row-level security filters rows: unless the index
        # leads with tenant_id (and the scan narrows to the tenant first), it walks other tenants'
        # entries, which its timing (and any plan) describes.
        stray = conn.execute(
            "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " WHERE i.indrelid = %s::regclass AND i.indkey[0] <> %s ORDER BY c.relname",
            (regclass, column[0]),
        ).fetchone()
        if stray is not None:
            raise UsageError(
                f"index {stray[0]} on {schema}.{table} must lead with tenant_id, e.g. (tenant_id, ...)"
                " (an index scan that does not narrow to the tenant first walks other tenants' entries)"
            )
        # Foreign-key checks ignore row-level security: a reference to another tenant table must
        # carry tenant_id onto tenant_id, or it could point at (and probe for) another tenant's rows.
        unbound = conn.execute(
            "SELECT c.conname FROM pg_constraint c JOIN pg_class r ON r.oid = c.confrelid"
            " JOIN pg_namespace rn ON rn.oid = r.relnamespace"
            " WHERE c.conrelid = %s::regclass AND c.contype = 'f' AND rn.nspname = %s"
            " AND NOT EXISTS (SELECT 1 FROM generate_subscripts(c.conkey, 1) AS k"
            "   WHERE c.conkey[k] = %s AND c.confkey[k] = (SELECT a.attnum FROM pg_attribute a"
            "     WHERE a.attrelid = c.confrelid AND a.attname = 'tenant_id' AND NOT a.attisdropped))",
            (regclass, schema, column[0]),
        ).fetchone()
        if unbound is not None:
            raise UsageError(
                f"foreign key {unbound[0]} on {schema}.{table} must map tenant_id to the referenced tenant_id"
                " (foreign-key checks ignore row-level security)"
            )
        check = sql.SQL("tenant_id = (SELECT tenantry_rls.current_tenant())")
        conn.execute(
            sql.SQL(
                "ALTER TABLE {t} ALTER COLUMN tenant_id SET DEFAULT tenantry_rls.current_tenant(),"
                " ALTER COLUMN tenant_id SET NOT NULL;"
                " ALTER TABLE {t} ENABLE ROW LEVEL SECURITY; ALTER TABLE {t} FORCE ROW LEVEL SECURITY;"
                " DROP POLICY IF EXISTS {policy} ON {t}; DROP POLICY IF EXISTS {allow} ON {t};"
                " CREATE POLICY {policy} ON {t} AS RESTRICTIVE FOR ALL USING ({check}) WITH CHECK ({check});"
                " CREATE POLICY {allow} ON {t} AS PERMISSIVE FOR ALL USING (true) WITH CHECK (true);"
                " REVOKE ALL ON {t} FROM {tools};"
                " GRANT SELECT, INSERT, UPDATE, DELETE ON {t} TO {tools}"
            ).format(
                t=qualified,
                policy=sql.Identifier(_POLICY),
                allow=sql.Identifier(_ALLOW),
                check=check,
                tools=tools,
            )
        )
    views = conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relkind = 'v'",
        (schema,),
    ).fetchall()
    for (view,) in views:
        conn.execute(
            sql.SQL("ALTER VIEW {v} SET (security_invoker = true); GRANT SELECT ON {v} TO {tools}").format(
                v=sql.Identifier(schema, str(view)), tools=tools
            )
        )
    conn.execute(
        sql.SQL("GRANT USAGE ON SCHEMA {s} TO {tools}; GRANT USAGE ON ALL SEQUENCES IN SCHEMA {s} TO {tools}").format(
            s=sql.Identifier(schema), tools=tools
        )
    )
    return tables
