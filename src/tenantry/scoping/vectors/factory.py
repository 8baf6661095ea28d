"""Build the configured vector backend."""

from __future__ import annotations

from pathlib import Path

from tenantry.core.settings import VectorSettings
from tenantry.scoping.threads import ThreadBulkheads
from tenantry.scoping.vectors.base import VectorScopes
from tenantry.scoping.vectors.embedders import load_embedder

__all__ = ["open_vector_scopes"]


def open_vector_scopes(
    settings: VectorSettings, data_dir: Path, *, bulkheads: ThreadBulkheads | None = None
) -> VectorScopes:
    """The vector scopes named by ``settings``: per-tenant sqlite-vec files, or one Qdrant collection.

    Without ``qdrant_url``, Qdrant runs in local mode under ``<data_dir>/vectors/qdrant``,
    which only one process may open.

    :raises UsageError: when the embedder cannot be loaded or has the wrong dimensions.
    :raises StorageError: when Qdrant's local directory is held by another process.
    """
    embedder = load_embedder(settings.embedder, settings.dimensions)
    if settings.backend == "qdrant":
        from tenantry.scoping.vectors.qdrant import QdrantVectorScopes

        api_key = settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key is not None else None
        return QdrantVectorScopes(
            embedder,
            url=settings.qdrant_url,
            api_key=api_key,
            path=None if settings.qdrant_url else data_dir / "vectors" / "qdrant",
            collection=settings.qdrant_collection,
            bulkheads=bulkheads,
        )
    from tenantry.scoping.vectors.sqlite import SqliteVectorScopes

    return SqliteVectorScopes(data_dir, embedder, bulkheads=bulkheads)
