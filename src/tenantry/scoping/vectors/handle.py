"""The part of ``ctx.vectors`` every backend shares: input checks, embedding, the worker thread.

A backend subclasses :class:`CheckedVectorHandle` and implements four blocking methods that
receive only validated input and already-computed vectors.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import TypeVar

from tenantry.scoping.threads import ThreadBulkheads, default_bulkheads
from tenantry.scoping.vectors._checks import (
    PreparedDocument,
    embed_checked,
    validate_collection,
    validate_documents,
    validate_ids,
    validate_limit,
    validate_query,
)
from tenantry.scoping.vectors.base import Embedder, VectorDocument, VectorMatch

__all__ = ["CheckedVectorHandle"]

_T = TypeVar("_T")


class CheckedVectorHandle(ABC):
    """Implements :class:`~tenantry.scoping.vectors.base.VectorHandle` over four blocking hooks."""

    def __init__(self, embedder: Embedder, tenant_id: str, bulkheads: ThreadBulkheads | None = None) -> None:
        self._embedder = embedder
        self._tenant_id = tenant_id
        self._bulkheads = bulkheads or default_bulkheads()

    async def _offload(self, work: Callable[[], _T]) -> _T:
        return await self._bulkheads.run(work, tenant_id=self._tenant_id)

    async def upsert(self, documents: Sequence[VectorDocument], *, collection: str = "default") -> int:
        validate_collection(collection)
        prepared = validate_documents(documents)
        if not prepared:
            return 0

        def work() -> int:
            vectors = embed_checked(self._embedder, [doc.text for doc in prepared])
            return self._write(collection, prepared, vectors)

        return await self._offload(work)

    async def search(self, query: str, *, limit: int = 5, collection: str = "default") -> list[VectorMatch]:
        validate_collection(collection)
        validate_query(query)
        validate_limit(limit)

        def work() -> list[VectorMatch]:
            [vector] = embed_checked(self._embedder, [query])
            return self._nearest(collection, vector, limit)

        return await self._offload(work)

    async def delete(self, ids: Sequence[str], *, collection: str = "default") -> int:
        validate_collection(collection)
        wanted = validate_ids(ids)
        if not wanted:
            return 0
        return await self._offload(lambda: self._remove(collection, wanted))

    async def count(self, *, collection: str = "default") -> int:
        validate_collection(collection)
        return await self._offload(lambda: self._size(collection))

    @abstractmethod
    def _write(self, collection: str, documents: list[PreparedDocument], vectors: list[list[float]]) -> int:
        """Insert or replace; return how many were written."""

    @abstractmethod
    def _nearest(self, collection: str, vector: list[float], limit: int) -> list[VectorMatch]: ...

    @abstractmethod
    def _remove(self, collection: str, ids: list[str]) -> int:
        """Delete by id; return how many existed."""

    @abstractmethod
    def _size(self, collection: str) -> int: ...
