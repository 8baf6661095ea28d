"""Vectors in Qdrant: one shared collection, every point tagged with its tenant.

This is Qdrant's multitenancy pattern: a single collection, a ``tenant_id`` payload on
every point (indexed as the tenant key, ``is_tenant=True``), and a filter on it inside
every store call (search, count, delete), never applied to results afterwards. The
collection is created with ``m=0, payload_m=16``: no global HNSW graph, one graph per
tenant, so there is also no index that spans tenants.

Each point's payload is ``tenant_id``, ``collection``, ``doc_id``, ``text`` and ``metadata``.
Its id is a UUIDv5 of ``(tenant_id, collection, doc_id)``, so no document id a tool picks
can name another tenant's point.

Server mode (``url=``) is for production and for more than one server process. Local mode
(``path=``) runs Qdrant's embedded engine in this process: it keeps the points in memory,
ignores payload indexes, and locks the directory, so **only one process may open a path**;
a second one gets a :class:`StorageError`.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, TypeVar

from qdrant_client import QdrantClient, models
from qdrant_client.common.client_exceptions import QdrantException
from qdrant_client.http.exceptions import ApiException, UnexpectedResponse

from tenantry.core.errors import StorageError, TenantryError, UsageError
from tenantry.core.ids import validate_tenant_id
from tenantry.scoping.threads import ThreadBulkheads
from tenantry.scoping.vectors._checks import (
    PreparedDocument,
)
from tenantry.scoping.vectors.base import Embedder, VectorMatch
from tenantry.scoping.vectors.handle import CheckedVectorHandle

__all__ = ["QdrantVectorScopes", "QdrantVectorHandle", "point_id", "tenant_filter"]

_T = TypeVar("_T")
_POINT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:tenantry:vectors:qdrant")
_DRIVER_ERRORS = (ApiException, QdrantException, ValueError, RuntimeError, OSError)
logger = logging.getLogger(__name__)


def point_id(tenant_id: str, collection: str, doc_id: str) -> str:
    """The Qdrant point id of one document: the tenant is part of it, so ids of two tenants never meet."""
    return str(uuid.uuid5(_POINT_NAMESPACE, json.dumps([tenant_id, collection, doc_id])))


def _match(key: str, value: str) -> models.FieldCondition:
    return models.FieldCondition(key=key, match=models.MatchValue(value=value))


def tenant_filter(tenant_id: str, collection: str | None = None, doc_ids: Sequence[str] = ()) -> models.Filter:
    """The filter every store call carries: this tenant, and optionally one collection and some ids."""
    must: list[models.Condition] = [_match("tenant_id", tenant_id)]
    if collection is not None:
        must.append(_match("collection", collection))
    if doc_ids:
        must.append(models.FieldCondition(key="doc_id", match=models.MatchAny(any=list(doc_ids))))
    return models.Filter(must=must)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, UnexpectedResponse) and exc.status_code is not None:
        return f"{type(exc).__name__} {exc.status_code}"
    return type(exc).__name__


class QdrantVectorScopes:
    """Every tenant's vectors in one Qdrant collection, each point tagged and filtered by tenant.

    :param embedder: turns texts into vectors; the collection records its name and dimensions.
    :param url: Qdrant server URL (server mode).
    :param api_key: the server's API key, if it needs one.
    :param path: directory for local mode, used when ``url`` is None (one process only).
    :param collection: name of the shared Qdrant collection.
    :raises UsageError: when neither or both of ``url`` and ``path`` are given.
    :raises StorageError: when local mode cannot open ``path`` (another process holds it).
    """

    def __init__(
        self,
        embedder: Embedder,
        *,
        url: str | None,
        api_key: str | None = None,
        path: Path | None = None,
        collection: str = "tenantry",
        timeout: int = 10,
        bulkheads: ThreadBulkheads | None = None,
    ) -> None:
        self.bulkheads = bulkheads
        if (url is None) == (path is None):
            raise UsageError("Qdrant needs either a server url or a local path, not both")
        self._embedder = embedder
        self._collection = collection
        self._local = url is None
        self._path = path
        self._ready = False
        self._ready_lock = threading.Lock()
        # Local mode is an in-process engine; one call at a time keeps it consistent.
        self._local_lock = threading.Lock()
        try:
            if path is not None:
                path.mkdir(parents=True, exist_ok=True, mode=0o700)
                self._client = QdrantClient(path=str(path))
            else:
                self._client = QdrantClient(url=url, api_key=api_key, timeout=timeout)
        except _DRIVER_ERRORS as exc:
            raise StorageError(f"cannot open the Qdrant vector store ({_describe(exc)})") from None

    @property
    def embedder(self) -> Embedder:
        return self._embedder

    @property
    def collection(self) -> str:
        return self._collection

    def for_tenant(self, tenant_id: str) -> QdrantVectorHandle:
        """:raises UsageError: for an invalid tenant id."""
        validate_tenant_id(tenant_id)
        return QdrantVectorHandle(self, tenant_id)

    def drop_tenant(self, tenant_id: str) -> None:
        """Delete every point of one tenant, by filter. Blocking.

        :raises StorageError: when Qdrant fails.
        """
        validate_tenant_id(tenant_id)

        def work(client: QdrantClient) -> None:
            client.delete(
                self._collection, points_selector=models.FilterSelector(filter=tenant_filter(tenant_id)), wait=True
            )

        self.call(work, tenant_id=tenant_id)

    def tenant_points(self, tenant_id: str, *, page: int = 256) -> Iterator[dict[str, Any]]:
        """The payload of every point of one tenant (``doc_id``, ``collection``, ``text``,
        ``metadata``), one scroll page in memory at a time. Blocking.

        :raises StorageError: when Qdrant fails.
        """
        validate_tenant_id(tenant_id)
        offset: Any = None
        while True:

            def work(client: QdrantClient, start: Any = offset) -> tuple[list[models.Record], Any]:
                return client.scroll(
                    self._collection,
                    scroll_filter=tenant_filter(tenant_id),
                    limit=page,
                    offset=start,
                    with_payload=True,
                    with_vectors=False,
                )

            records, offset = self.call(work, tenant_id=tenant_id)
            for record in records:
                yield dict(record.payload or {})
            if offset is None:
                return

    def tenant_point_count(self, tenant_id: str) -> int:
        """How many points of the tenant the collection holds. Blocking."""
        validate_tenant_id(tenant_id)
        selected = tenant_filter(tenant_id)
        return self.call(
            lambda client: client.count(self._collection, count_filter=selected, exact=True).count, tenant_id=tenant_id
        )

    def compact_local(self) -> None:
        """Local mode: rewrite the engine's SQLite file so deleted points' payloads leave its free
        pages (``VACUUM``). Server mode compacts its own segments; nothing to do here. Blocking."""
        if self._path is None:
            return
        storage = self._path / "collection" / self._collection / "storage.sqlite"
        if not storage.is_file():
            return
        with self._local_lock:
            try:
                conn = sqlite3.connect(storage, timeout=10)
                try:
                    conn.execute("VACUUM")
                finally:
                    conn.close()
            except sqlite3.Error as exc:
                raise StorageError(f"cannot compact the local vector store ({type(exc).__name__})") from None

    def close(self) -> None:
        with self._local_lock:
            self._client.close()

    def call(self, work: Callable[[QdrantClient], _T], *, tenant_id: str) -> _T:
        """Run ``work`` against the client (blocking), creating the collection first if needed.

        :raises StorageError: for any failure of Qdrant or its client.
        """
        try:
            with self._serialised():
                self._ensure_collection()
                return work(self._client)
        except TenantryError:
            raise
        except _DRIVER_ERRORS as exc:
            logger.warning("vector store error", extra={"tenant_id": tenant_id, "error": _describe(exc)})
            raise StorageError(f"the vector store failed ({_describe(exc)})") from None

    def _serialised(self) -> AbstractContextManager[Any]:
        return self._local_lock if self._local else nullcontext()

    def _ensure_collection(self) -> None:
        if self._ready:
            return
        with self._ready_lock:
            if self._ready:
                return
            if not self._client.collection_exists(self._collection):
                try:
                    self._create_collection()
                except _DRIVER_ERRORS:
                    # Another process may have created it meanwhile; if so, check that one instead.
                    if not self._client.collection_exists(self._collection):
                        raise
            self._check_collection()
            self._ready = True

    def _create_collection(self) -> None:
        self._client.create_collection(
            self._collection,
            vectors_config=models.VectorParams(size=self._embedder.dimensions, distance=models.Distance.COSINE),
            hnsw_config=models.HnswConfigDiff(m=0, payload_m=16),
            metadata={"tenantry_embedder": self._embedder.name, "tenantry_dimensions": self._embedder.dimensions},
        )
        if self._local:
            return  # local mode ignores payload indexes (and warns about them)
        tenant_key = models.KeywordIndexParams(type=models.KeywordIndexType.KEYWORD, is_tenant=True)
        self._client.create_payload_index(self._collection, "tenant_id", field_schema=tenant_key, wait=True)
        for field in ("collection", "doc_id"):
            self._client.create_payload_index(
                self._collection, field, field_schema=models.PayloadSchemaType.KEYWORD, wait=True
            )

    def _check_collection(self) -> None:
        config = self._client.get_collection(self._collection).config
        vectors = config.params.vectors
        size = vectors.size if isinstance(vectors, models.VectorParams) else None
        metadata = config.metadata or {}
        recorded = metadata.get("tenantry_embedder")
        if size != self._embedder.dimensions or (recorded is not None and recorded != self._embedder.name):
            raise StorageError(
                f"the Qdrant collection {self._collection!r} holds vectors of embedder {recorded!r} "
                f"({size} dimensions), but the configured embedder is {self._embedder.name!r} "
                f"({self._embedder.dimensions}); switch back, re-index, or use another collection"
            )


class QdrantVectorHandle(CheckedVectorHandle):
    """``ctx.vectors`` on Qdrant. See :class:`~tenantry.scoping.vectors.base.VectorHandle`."""

    def __init__(self, scopes: QdrantVectorScopes, tenant_id: str) -> None:
        super().__init__(scopes.embedder, tenant_id, scopes.bulkheads)
        self._scopes = scopes

    def _write(self, collection: str, documents: list[PreparedDocument], vectors: list[list[float]]) -> int:
        points = [self._point(collection, doc, vector) for doc, vector in zip(documents, vectors, strict=True)]
        self._call(lambda client: client.upsert(self._scopes.collection, points=points, wait=True))
        return len(points)

    def _nearest(self, collection: str, vector: list[float], limit: int) -> list[VectorMatch]:
        response = self._call(
            lambda client: client.query_points(
                self._scopes.collection,
                query=vector,
                query_filter=tenant_filter(self._tenant_id, collection),
                limit=limit,
                with_payload=True,
            )
        )
        return [self._match(point, collection) for point in response.points]

    def _remove(self, collection: str, ids: list[str]) -> int:
        selected = tenant_filter(self._tenant_id, collection, ids)

        def work(client: QdrantClient) -> int:
            existing = client.count(self._scopes.collection, count_filter=selected, exact=True).count
            if existing:
                client.delete(
                    self._scopes.collection, points_selector=models.FilterSelector(filter=selected), wait=True
                )
            return existing

        return self._call(work)

    def _size(self, collection: str) -> int:
        selected = tenant_filter(self._tenant_id, collection)
        return self._call(lambda client: client.count(self._scopes.collection, count_filter=selected, exact=True).count)

    def _call(self, work: Callable[[QdrantClient], _T]) -> _T:
        return self._scopes.call(work, tenant_id=self._tenant_id)

    def _point(self, collection: str, document: PreparedDocument, vector: list[float]) -> models.PointStruct:
        return models.PointStruct(
            id=point_id(self._tenant_id, collection, document.id),
            vector=vector,
            payload={
                "tenant_id": self._tenant_id,
                "collection": collection,
                "doc_id": document.id,
                "text": document.text,
                "metadata": document.metadata,
            },
        )

    def _match(self, point: models.ScoredPoint, collection: str) -> VectorMatch:
        payload = point.payload or {}
        # The filter already did this inside Qdrant; a point that still differs means the store is wrong.
        if payload.get("tenant_id") != self._tenant_id or payload.get("collection") != collection:
            logger.error("vector store returned a point outside the filter", extra={"tenant_id": self._tenant_id})
            raise StorageError("the vector store returned a point outside this tenant's scope")
        metadata = payload.get("metadata")
        return VectorMatch(
            id=str(payload.get("doc_id", "")),
            score=float(point.score),
            text=str(payload.get("text", "")),
            metadata=dict(metadata) if isinstance(metadata, dict) else {},
        )
