"""Looking for a canary everywhere a deployment could have kept it: every byte of every file
under the data dir, every row of every PostgreSQL table (as the superuser, past row-level
security), every key and object of a bucket, every payload of a Qdrant collection."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["files_containing", "pg_tables_containing", "bucket_containing", "qdrant_payloads_containing"]


def files_containing(root: Path, needle: str) -> list[str]:
    """Files under ``root`` whose raw bytes (free pages, logs, journals included) hold ``needle``."""
    wanted = needle.encode()
    return sorted(
        str(path.relative_to(root)) for path in root.rglob("*") if path.is_file() and wanted in path.read_bytes()
    )


def pg_tables_containing(admin_url: str, needle: str) -> list[str]:
    """``schema.table`` of every table in the database with a row whose text holds ``needle``."""
    import psycopg
    from psycopg import sql

    found = []
    with psycopg.connect(admin_url, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE'"
            " AND table_schema NOT IN ('pg_catalog', 'information_schema')"
        ).fetchall()
        for schema, table in tables:
            query = sql.SQL("SELECT count(*) FROM {} AS t WHERE t::text LIKE %s").format(sql.Identifier(schema, table))
            row = conn.execute(query, (f"%{needle}%",)).fetchone()
            if row and row[0]:
                found.append(f"{schema}.{table}")
    return sorted(found)


def bucket_containing(client: Any, bucket: str, needle: str) -> list[str]:
    """Keys of the bucket that name ``needle`` or whose object holds it."""
    found = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            key = obj["Key"]
            body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
            if needle in key or needle.encode() in body:
                found.append(key)
    return sorted(found)


def qdrant_payloads_containing(path: Path, collection: str, needle: str) -> int:
    """How many points of a local-mode Qdrant collection carry ``needle`` in their payload."""
    from qdrant_client import QdrantClient

    client = QdrantClient(path=str(path))
    try:
        if not client.collection_exists(collection):
            return 0
        count, offset = 0, None
        while True:
            points, offset = client.scroll(collection, limit=256, offset=offset, with_payload=True)
            count += sum(1 for p in points if needle in json.dumps(p.payload))
            if offset is None:
                return count
    finally:
        client.close()
