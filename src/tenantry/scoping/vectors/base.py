"""The tenant-scoped vector handle tools receive as ``ctx.vectors``, and the embedder it uses."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["Embedder", "VectorDocument", "VectorHandle", "VectorMatch", "VectorScopes"]


@dataclass(frozen=True, slots=True)
class VectorDocument:
    """One text to index. ``id`` is the tool's own identifier, unique within the tenant and collection."""

    id: str
    text: str
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class VectorMatch:
    id: str
    score: float
    """Cosine similarity, higher is closer (1.0 = same direction)."""
    text: str
    metadata: dict[str, Any]


class Embedder(Protocol):
    """Turns texts into vectors of a fixed dimension. Must be thread-safe; called off the event loop."""

    @property
    def name(self) -> str: ...

    @property
    def dimensions(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> list[list[float]]: ...


class VectorHandle(Protocol):
    """Vectors of one tenant. Every point carries the tenant's id and every search is filtered by
    it inside the store, so neither an id, a collection name nor a query can reach another tenant.

    ``collection`` names a set of documents within the tenant (``[a-z0-9_]{1,63}``).

    :raises UsageError: for an invalid id, collection name, metadata or limit.
    :raises StorageError: when the vector store itself fails.
    """

    async def upsert(self, documents: Sequence[VectorDocument], *, collection: str = "default") -> int:
        """Insert or replace documents by id; returns how many were written."""
        ...

    async def search(self, query: str, *, limit: int = 5, collection: str = "default") -> list[VectorMatch]:
        """The ``limit`` documents closest to ``query``, best first."""
        ...

    async def delete(self, ids: Sequence[str], *, collection: str = "default") -> int:
        """Remove documents by id; returns how many existed."""
        ...

    async def count(self, *, collection: str = "default") -> int: ...


class VectorScopes(Protocol):
    """Hands out vector handles, one tenant at a time; there is no unscoped handle."""

    def for_tenant(self, tenant_id: str) -> VectorHandle: ...

    def drop_tenant(self, tenant_id: str) -> None:
        """Delete every vector of one tenant (tenant deletion)."""
        ...

    def close(self) -> None: ...
