"""The ``upstreams`` table (gateway mode): its DDL and queries, one text for both dialects.

``{p}`` is the driver's placeholder (``?`` for SQLite, ``%s`` for psycopg) and ``{t}`` the table's
qualified name, so the two stores cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tenantry.core.upstreams import UpstreamSpec

__all__ = ["UpstreamQueries", "SQLITE_UPSTREAMS", "POSTGRES_UPSTREAMS", "upstream_from_row"]

_DDL = "CREATE TABLE IF NOT EXISTS {t} (name TEXT PRIMARY KEY, spec TEXT NOT NULL, created_at {int} NOT NULL);"


@dataclass(frozen=True)
class UpstreamQueries:
    create: str
    insert: str
    select_all: str
    delete: str

    @classmethod
    def dialect(cls, *, placeholder: str, table: str, integer: str) -> UpstreamQueries:
        def q(text: str) -> str:
            return text.replace("{p}", placeholder).replace("{t}", table)

        return cls(
            create=_DDL.replace("{t}", table).replace("{int}", integer),
            insert=q("INSERT INTO {t} (name, spec, created_at) VALUES ({p}, {p}, {p})"),
            select_all=q("SELECT name, spec, created_at FROM {t} ORDER BY name"),
            delete=q("DELETE FROM {t} WHERE name = {p}"),
        )


SQLITE_UPSTREAMS = UpstreamQueries.dialect(placeholder="?", table="upstreams", integer="INTEGER")
POSTGRES_UPSTREAMS = UpstreamQueries.dialect(placeholder="%s", table="tenantry.upstreams", integer="BIGINT")


def upstream_from_row(row: tuple[Any, ...]) -> UpstreamSpec:
    name, spec, created_at = row
    return UpstreamSpec.from_json(str(name), str(spec), int(created_at))
