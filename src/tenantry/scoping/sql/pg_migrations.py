"""What ``tenantry db init`` records in the database and ``tenantry db migrate`` replays.

Both live in ``tenantry_rls`` (owned by the owner role, unreadable by the tools role), so every
server, data dir and replica on the database sees the same:

* ``tenantry_rls.data_roles``: the owner, application and tools roles ``db init`` set up, so
  ``db migrate`` grants to the right tools role without being told again.
* ``tenantry_rls.migrations``: every schema script ``db migrate`` accepted, in order, by
  SHA-256; ``tenantry_rls.applied_migrations``: which of them each data schema has. Re-running
  ``db migrate`` with the same files applies nothing twice; a tenant schema created later
  (``sql.isolation = "schema"``) receives every recorded script on the next ``db migrate``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from tenantry.scoping.sql.pg_schema import DataRoles, secure_tenant_tables

__all__ = [
    "BOOKKEEPING_SQL",
    "Migration",
    "SchemaMigrated",
    "record_roles",
    "recorded_roles",
    "migrate_schemas",
]

BOOKKEEPING_SQL = """
CREATE TABLE IF NOT EXISTS tenantry_rls.data_roles (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    owner_role text NOT NULL, app_role text NOT NULL, tools_role text NOT NULL);
CREATE TABLE IF NOT EXISTS tenantry_rls.migrations (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sha256 text NOT NULL UNIQUE, name text NOT NULL, script text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS tenantry_rls.applied_migrations (
    schema_name text NOT NULL, sha256 text NOT NULL REFERENCES tenantry_rls.migrations (sha256),
    applied_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (schema_name, sha256));
REVOKE ALL ON tenantry_rls.data_roles, tenantry_rls.migrations, tenantry_rls.applied_migrations FROM PUBLIC;
"""

# Where scripts are tried out when no data schema exists yet (schema per tenant, no tenants):
# created and rolled back inside the recording transaction.
_TRIAL_SCHEMA = "tenantry_migration_trial"


@dataclass(frozen=True)
class Migration:
    name: str
    """For messages only; a script is known by its content."""
    script: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.script.encode()).hexdigest()


@dataclass(frozen=True)
class SchemaMigrated:
    schema: str
    applied: list[str]
    """Names of the scripts applied now (the others were applied before)."""
    tables: list[str]


def record_roles(conn: psycopg.Connection[Any], *, owner: str, app: str, tools: str) -> None:
    """Remember the roles ``db init`` set up (run as the owner, inside ``tenantry_rls``)."""
    conn.execute(BOOKKEEPING_SQL)
    conn.execute(
        "INSERT INTO tenantry_rls.data_roles (owner_role, app_role, tools_role) VALUES (%s, %s, %s)"
        " ON CONFLICT (singleton) DO UPDATE SET owner_role = EXCLUDED.owner_role,"
        " app_role = EXCLUDED.app_role, tools_role = EXCLUDED.tools_role",
        (owner, app, tools),
    )


def recorded_roles(conn: psycopg.Connection[Any]) -> tuple[str, str, str] | None:
    """(owner, app, tools) as recorded by ``db init``, or ``None`` for a database set up before."""
    row = conn.execute("SELECT to_regclass('tenantry_rls.data_roles') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return None
    found = conn.execute("SELECT owner_role, app_role, tools_role FROM tenantry_rls.data_roles").fetchone()
    return (str(found[0]), str(found[1]), str(found[2])) if found else None


def migrate_schemas(
    conn: psycopg.Connection[Any], schemas: Sequence[str], new: Sequence[Migration], roles: DataRoles
) -> Iterator[SchemaMigrated]:
    """Record ``new`` scripts, then bring each schema up to date and under row-level security.

    ``conn`` is the owner's, in autocommit mode. New scripts are recorded in the transaction
    that first applies them (to the first schema, or to a trial schema rolled back when there
    is none), so a script that fails or breaks a rule is never recorded. Each schema is one
    transaction; a schema that fails stops the run with the earlier ones migrated.

    :raises UsageError: a script breaks a tenant-table rule (see ``secure_tenant_tables``).
    :raises psycopg.Error: a script fails; the caller names the schema from the results so far.
    """
    conn.execute(BOOKKEEPING_SQL)
    first, rest = (schemas[0], schemas[1:]) if schemas else (None, [])
    done: SchemaMigrated | None = None
    with conn.transaction():
        conn.execute("LOCK TABLE tenantry_rls.migrations IN SHARE ROW EXCLUSIVE MODE")  # one migrate at a time
        for migration in new:
            conn.execute(
                "INSERT INTO tenantry_rls.migrations (sha256, name, script) VALUES (%s, %s, %s)"
                " ON CONFLICT (sha256) DO NOTHING",
                (migration.sha256, migration.name, migration.script),
            )
        if first is None:
            with conn.transaction() as trial:
                _migrate_one(conn, _TRIAL_SCHEMA, roles)
                raise psycopg.Rollback(trial)
        else:
            done = _migrate_one(conn, first, roles)
    if done is not None:
        yield done
    for schema in rest:
        with conn.transaction():
            conn.execute("LOCK TABLE tenantry_rls.migrations IN SHARE ROW EXCLUSIVE MODE")
            result = _migrate_one(conn, schema, roles)
        yield result


def _migrate_one(conn: psycopg.Connection[Any], schema: str, roles: DataRoles) -> SchemaMigrated:
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(schema)))
    pending = conn.execute(
        "SELECT m.sha256, m.name, m.script FROM tenantry_rls.migrations m WHERE NOT EXISTS"
        " (SELECT 1 FROM tenantry_rls.applied_migrations a WHERE a.schema_name = %s AND a.sha256 = m.sha256)"
        " ORDER BY m.seq",
        (schema,),
    ).fetchall()
    applied: list[str] = []
    for sha, name, script in pending:
        conn.execute(str(script).encode())
        conn.execute("INSERT INTO tenantry_rls.applied_migrations (schema_name, sha256) VALUES (%s, %s)", (schema, sha))
        applied.append(str(name))
        # A script may change search_path; the next one starts from the same place.
        conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(schema)))
    return SchemaMigrated(schema=schema, applied=applied, tables=secure_tenant_tables(conn, schema, roles))
