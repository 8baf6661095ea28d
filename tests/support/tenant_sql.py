"""A throwaway PostgreSQL database prepared by ``tenantry db init`` + ``db migrate --demo``."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

from tests.support.server import run_cli

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


@dataclass(frozen=True)
class TenantDatabase:
    admin_url: str
    owner_url: str
    tools_url: str
    app_url: str
    data_dir: Path
    tools_role: str

    @property
    def tenant_key(self) -> bytes:
        return (self.data_dir / "keys" / "sql-tenant.key").read_bytes()


@contextmanager
def tenant_database(data_dir: Path, *, extra_args: tuple[str, ...] = ()) -> Iterator[TenantDatabase]:
    name = f"tenantry_sql_{uuid.uuid4().hex[:10]}"
    suffix = uuid.uuid4().hex[:8]
    owner, app, tools = f"t_owner_{suffix}", f"t_app_{suffix}", f"t_tools_{suffix}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql://postgres@127.0.0.1:5432/{name}"
    try:
        run_cli(
            "db", "init", "--admin-url", url, "--owner", owner, "--app-role", app, "--tools-role", tools,
            *extra_args, data_dir=data_dir,
        )  # fmt: skip
        yield TenantDatabase(
            admin_url=url,
            owner_url=url.replace("postgres@", f"{owner}@"),
            tools_url=url.replace("postgres@", f"{tools}@"),
            app_url=url.replace("postgres@", f"{app}@"),
            data_dir=data_dir,
            tools_role=tools,
        )
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            for role in (owner, app, tools):
                conn.execute(f'DROP ROLE IF EXISTS "{role}"')


def write_scaled_config(path: Path, db: TenantDatabase, bucket: str, s3_endpoint_url: str) -> Path:
    """A TOML configuration with every data store scaled out: PostgreSQL (RLS), S3 and Qdrant."""
    path.write_text(
        f"""
[sql]
url = "{db.tools_url}"

[files]
backend = "s3"
s3_bucket = "{bucket}"
s3_endpoint_url = "{s3_endpoint_url}"
s3_access_key_id = "testing"
s3_secret_access_key = "testing"

[vectors]
backend = "qdrant"
"""
    )
    return path
