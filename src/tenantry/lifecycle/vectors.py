"""``ctx.vectors``' part of a tenant's life cycle: ``vectors/documents.jsonl`` (collection, id,
text, metadata; the embeddings are derived from the text and not exported).

sqlite-vec: the tenant's own file, deleted with its write-ahead log. Qdrant: the tenant's points,
deleted by filter; in local mode the engine's SQLite file is then rewritten (``VACUUM``), so the
deleted payloads do not linger in its free pages.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from tenantry.lifecycle.registry import Advance, register

if TYPE_CHECKING:
    from tenantry.lifecycle.bundle import Bundle
    from tenantry.runtime import Runtime
    from tenantry.scoping.vectors.qdrant import QdrantVectorScopes
    from tenantry.scoping.vectors.sqlite import SqliteVectorScopes

__all__ = ["SqliteVectorData", "QdrantVectorData"]


@dataclass
class SqliteVectorData:
    scopes: SqliteVectorScopes
    name: str = "vectors:sqlite-vec"
    retained: bool = False

    def export(self, tenant_id: str, bundle: Bundle, advance: Advance) -> None:
        def counted() -> object:
            for document in self.scopes.tenant_documents(tenant_id):
                advance(1)
                yield document

        bundle.write_jsonl("vectors/documents.jsonl", self.name, counted())  # type: ignore[arg-type]

    def erase(self, tenant_id: str) -> None:
        self.scopes.drop_tenant(tenant_id)

    def leftovers(self, tenant_id: str) -> list[str]:
        return ["its vector file"] if self.scopes.has_tenant_file(tenant_id) else []


@register("tenantry.scoping.vectors.sqlite.SqliteVectorScopes")
def _sqlite(adapter: object, runtime: Runtime) -> SqliteVectorData:
    return SqliteVectorData(runtime.scopes.vectors)  # type: ignore[arg-type]


@dataclass
class QdrantVectorData:
    scopes: QdrantVectorScopes
    name: str = "vectors:qdrant"
    retained: bool = False

    def export(self, tenant_id: str, bundle: Bundle, advance: Advance) -> None:
        def documents() -> object:
            for payload in self.scopes.tenant_points(tenant_id):
                advance(1)
                yield {k: payload.get(k) for k in ("collection", "doc_id", "text", "metadata")}

        bundle.write_jsonl("vectors/documents.jsonl", self.name, documents())  # type: ignore[arg-type]

    def erase(self, tenant_id: str) -> None:
        self.scopes.drop_tenant(tenant_id)
        self.scopes.compact_local()

    def leftovers(self, tenant_id: str) -> list[str]:
        count = self.scopes.tenant_point_count(tenant_id)
        return [f"{count} point(s)"] if count else []


@register("tenantry.scoping.vectors.qdrant.QdrantVectorScopes")
def _qdrant(adapter: object, runtime: Runtime) -> QdrantVectorData:
    return QdrantVectorData(runtime.scopes.vectors)  # type: ignore[arg-type]
