"""Embedded vectors: one sqlite-vec database file per tenant.

Each tenant's vectors live in ``<data_dir>/tenants/<id>/vectors.sqlite3``, so isolation is
physical. Every row still carries ``tenant_id`` (in the vector table as a sqlite-vec
partition key) and every statement filters by it, so a file copied or mounted under the
wrong tenant answers nothing instead of the other tenant's documents.

Layout of one file::

    meta         key/value: the embedder name and dimensions that filled the store
    collections  id, tenant_id, name           (one row per collection)
    documents    id, tenant_id, collection_id, doc_id, text, metadata (JSON)
    vec_<id>     vec0(tenant_id partition key, embedding float[dim] cosine), rowid = documents.id

Vector tables are named by the collection's number, never its name: sqlite-vec adds shadow
tables such as ``vec_<x>_chunks``, which another collection's name could otherwise collide with.

The stdlib ``sqlite3`` of some Python builds cannot load extensions; ``apsw`` always can.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from array import array
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import apsw
import sqlite_vec

from tenantry.core.errors import StorageError, StorageQuotaExceeded, TenantryError
from tenantry.core.ids import validate_tenant_id
from tenantry.scoping.open_files import OpenPerTenant
from tenantry.scoping.page_quota import WAL_SIZE_LIMIT, full_means_quota, page_limit
from tenantry.scoping.threads import ThreadBulkheads
from tenantry.scoping.vectors._checks import (
    PreparedDocument,
    load_metadata,
)
from tenantry.scoping.vectors.base import Embedder, VectorMatch
from tenantry.scoping.vectors.handle import CheckedVectorHandle

__all__ = ["SqliteVectorScopes", "SqliteVectorHandle", "tenant_vectors_path"]

_T = TypeVar("_T")
_MAX_OPEN = 256
_BUSY_TIMEOUT_MS = 10_000
logger = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;
CREATE TABLE IF NOT EXISTS collections (
    id INTEGER PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    name TEXT NOT NULL,
    UNIQUE (tenant_id, name)
) STRICT;
CREATE TABLE IF NOT EXISTS documents (
    id INTEGER PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    collection_id INTEGER NOT NULL REFERENCES collections (id),
    doc_id TEXT NOT NULL,
    text TEXT NOT NULL,
    metadata TEXT NOT NULL,
    UNIQUE (tenant_id, collection_id, doc_id)
) STRICT;
"""


# vec0 preallocates a chunk per partition: the default 1024 vectors (1.5 MiB at 384 dimensions)
# per collection per tenant would cost 15 GiB of disk for 10,000 small tenants; 128 costs ~200 KiB.
_CHUNK_SIZE = 128


def tenant_vectors_path(data_dir: Path, tenant_id: str) -> Path:
    return data_dir / "tenants" / validate_tenant_id(tenant_id) / "vectors.sqlite3"


def _pack(vector: Sequence[float]) -> bytes:
    return array("f", vector).tobytes()


def _vec_table(collection_id: int) -> str:
    return f'"vec_{int(collection_id)}"'


class _TenantStore:
    """One open file, with the lock that serialises its use."""

    def __init__(self, path: Path, tenant_id: str, embedder: Embedder) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        conn = apsw.Connection(str(path))
        try:
            conn.enable_load_extension(True)
            conn.load_extension(sqlite_vec.loadable_path())
            conn.enable_load_extension(False)
            conn.set_busy_timeout(_BUSY_TIMEOUT_MS)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
            conn.execute("PRAGMA trusted_schema=OFF")
            conn.execute("PRAGMA foreign_keys=ON")
            with conn:
                conn.execute(_SCHEMA)
                _claim_for_embedder(conn, embedder)
            page_size = _first(conn, "PRAGMA page_size")
        except BaseException:
            conn.close()
            raise
        self.conn = conn
        self.path = path
        self.page_size = page_size or 4096
        self.chunk_bytes = _CHUNK_SIZE * embedder.dimensions * 4
        """What vec0 allocates at once for a collection's next vectors (a chunk of float32s)."""
        self.max_bytes: int | None = None
        """The ``vector_bytes`` quota applied to this connection (``max_page_count``), once applied."""
        self.tenant_id = tenant_id
        self.lock = threading.Lock()
        self.closed = False

    def bound(self, max_bytes: int) -> None:
        """Let the file grow to ``max_bytes`` at most (held under ``lock``; see :mod:`tenantry.scoping.page_quota`)."""
        if max_bytes != self.max_bytes:
            self.conn.execute(f"PRAGMA max_page_count = {page_limit(max_bytes, self.page_size)}")
            self.max_bytes = max_bytes

    def full_means_quota(self) -> bool:
        used = _first(self.conn, "PRAGMA page_count") or 0
        limit = _first(self.conn, "PRAGMA max_page_count") or 0
        return full_means_quota(self.path, used, limit, self.page_size)

    def chunk_does_not_fit(self) -> bool:
        """Whether the page limit leaves less room than a new vector chunk needs: sqlite-vec reports
        its ``SQLITE_FULL`` there as a plain ``SQLError`` ("Could not insert a new vector chunk")."""
        used = _first(self.conn, "PRAGMA page_count") or 0
        reusable = _first(self.conn, "PRAGMA freelist_count") or 0
        limit = _first(self.conn, "PRAGMA max_page_count") or 0
        return (limit - used + reusable) * self.page_size < 2 * self.chunk_bytes and self.full_means_quota()

    def close(self) -> None:
        with self.lock:
            if not self.closed:
                self.closed = True
                self.conn.close()


def _claim_for_embedder(conn: apsw.Connection, embedder: Embedder) -> None:
    """Record the embedder on first use; refuse a store filled by another one."""
    wanted = {"embedder": embedder.name, "dimensions": str(embedder.dimensions)}
    found = {
        str(key): str(value)
        for key, value in conn.execute("SELECT key, value FROM meta WHERE key IN ('embedder', 'dimensions')")
    }
    if not found:
        conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", list(wanted.items()))
        return
    if found != wanted:
        raise StorageError(
            f"this tenant's vectors were made by embedder {found.get('embedder')!r} "
            f"({found.get('dimensions')} dimensions), but the configured embedder is {embedder.name!r} "
            f"({embedder.dimensions}); switch back or re-index"
        )


class SqliteVectorScopes:
    """Per-tenant sqlite-vec files under ``<data_dir>/tenants/<id>/``, kept open in an LRU.

    :param data_dir: the server's data directory.
    :param embedder: turns texts into vectors; every file records its name and dimensions.
    """

    def __init__(self, data_dir: Path, embedder: Embedder, *, bulkheads: ThreadBulkheads | None = None) -> None:
        self._data_dir = data_dir
        self._embedder = embedder
        self.bulkheads = bulkheads
        self._open = OpenPerTenant(self._open_store, limit=_MAX_OPEN)

    @property
    def embedder(self) -> Embedder:
        return self._embedder

    def for_tenant(self, tenant_id: str) -> SqliteVectorHandle:
        """:raises UsageError: for an invalid tenant id."""
        validate_tenant_id(tenant_id)
        return SqliteVectorHandle(self, tenant_id)

    def store(self, tenant_id: str) -> _TenantStore:
        """The open store of ``tenant_id``, opening (and creating) it if needed. Blocking.

        :raises StorageError: when the file cannot be opened or was filled by another embedder.
        """
        return self._open.get(tenant_id)

    def _open_store(self, tenant_id: str) -> _TenantStore:
        try:
            return _TenantStore(tenant_vectors_path(self._data_dir, tenant_id), tenant_id, self._embedder)
        except (apsw.Error, OSError) as exc:
            raise StorageError(f"cannot open the tenant vector store: {type(exc).__name__}") from None

    def drop_tenant(self, tenant_id: str) -> None:
        """Close and delete the tenant's vector file (with its WAL). Blocking.

        :raises StorageError: when a file cannot be removed.
        """
        path = tenant_vectors_path(self._data_dir, tenant_id)

        def remove_files() -> None:
            try:
                for suffix in ("", "-wal", "-shm", "-journal"):
                    with contextlib.suppress(FileNotFoundError):
                        path.with_name(path.name + suffix).unlink()
            except OSError as exc:
                raise StorageError(f"cannot delete the tenant vector store: {type(exc).__name__}") from None

        self._open.discard(tenant_id, then=remove_files)

    def tenant_documents(self, tenant_id: str, *, page: int = 500) -> Iterator[dict[str, Any]]:
        """Every document of one tenant (``collection``, ``doc_id``, ``text``, ``metadata``), read
        one page at a time; nothing (and no file created) when it has no vector file. Blocking.

        :raises StorageError: when the file cannot be read.
        """
        if not tenant_vectors_path(self._data_dir, tenant_id).is_file():
            return
        after = 0
        while True:
            store = self.store(tenant_id)
            with store.lock:
                rows = list(
                    store.conn.execute(
                        "SELECT d.id, c.name, d.doc_id, d.text, d.metadata FROM documents AS d"
                        " JOIN collections AS c ON c.id = d.collection_id"
                        " WHERE d.tenant_id = ? AND d.id > ? ORDER BY d.id LIMIT ?",
                        (tenant_id, after, page),
                    )
                )
            for rowid, collection, doc_id, text, metadata in rows:
                yield {
                    "collection": str(collection),
                    "doc_id": str(doc_id),
                    "text": str(text),
                    "metadata": load_metadata(str(metadata)),
                }
                after = int(rowid)
            if len(rows) < page:
                return

    def release_tenant(self, tenant_id: str) -> None:
        self._open.discard(tenant_id)

    def has_tenant_file(self, tenant_id: str) -> bool:
        path = tenant_vectors_path(self._data_dir, tenant_id)
        return any(path.with_name(path.name + suffix).exists() for suffix in ("", "-wal", "-shm", "-journal"))

    def close(self) -> None:
        self._open.close()


class SqliteVectorHandle(CheckedVectorHandle):
    """``ctx.vectors`` on the embedded default. See :class:`~tenantry.scoping.vectors.base.VectorHandle`."""

    def __init__(self, scopes: SqliteVectorScopes, tenant_id: str) -> None:
        super().__init__(scopes.embedder, tenant_id, scopes.bulkheads)
        self._scopes = scopes

    def _write(self, collection: str, documents: list[PreparedDocument], vectors: list[list[float]]) -> int:
        return self._locked(lambda store: _upsert(store, collection, documents, vectors))

    def _nearest(self, collection: str, vector: list[float], limit: int) -> list[VectorMatch]:
        return self._locked(lambda store: _search(store, collection, vector, limit))

    def _remove(self, collection: str, ids: list[str]) -> int:
        return self._locked(lambda store: _delete(store, collection, ids))

    def _size(self, collection: str) -> int:
        return self._locked(lambda store: _count(store, collection))

    def _locked(self, work: Callable[[_TenantStore], _T]) -> _T:
        max_bytes = self._bulkheads.limits_for(self._tenant_id).vector_bytes
        while True:
            store = self._scopes.store(self._tenant_id)
            with store.lock:
                if store.closed:
                    continue  # evicted from the LRU between lookup and lock; open it again
                try:
                    store.bound(max_bytes)
                    return work(store)
                except TenantryError:
                    raise
                except apsw.FullError:
                    if store.full_means_quota():
                        raise self._quota_exceeded(max_bytes) from None
                    raise StorageError("the server's disk is full; the documents were not stored") from None
                except apsw.BusyError:
                    raise StorageError("the tenant vector store is busy; try again") from None
                except apsw.Error as exc:
                    if isinstance(exc, apsw.SQLError) and store.chunk_does_not_fit():
                        raise self._quota_exceeded(max_bytes) from None
                    logger.warning(
                        "vector store error", extra={"tenant_id": self._tenant_id, "error": type(exc).__name__}
                    )
                    raise StorageError(f"the tenant vector store failed ({type(exc).__name__})") from None

    @staticmethod
    def _quota_exceeded(max_bytes: int) -> StorageQuotaExceeded:
        return StorageQuotaExceeded(
            f"vector storage quota exceeded: the tenant's vector store is at its {max_bytes} byte"
            " limit (vector_bytes); delete documents first"
        )


# -- statements (worker thread, store lock held) -------------------------------------------


def _first(conn: apsw.Connection, sql: str, params: tuple[apsw.SQLiteValue, ...] = ()) -> int | None:
    """The first column of the first row as an int (ids, counts), or None without a row."""
    row = conn.execute(sql, params).fetchone()
    return None if row is None else int(row[0])


def _collection_id(store: _TenantStore, name: str, *, create: bool) -> int | None:
    found = _first(store.conn, "SELECT id FROM collections WHERE tenant_id = ? AND name = ?", (store.tenant_id, name))
    if found is not None or not create:
        return found
    dimensions = _first(store.conn, "SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'dimensions'")
    created = _first(
        store.conn, "INSERT INTO collections (tenant_id, name) VALUES (?, ?) RETURNING id", (store.tenant_id, name)
    )
    assert dimensions is not None and created is not None
    store.conn.execute(
        f"CREATE VIRTUAL TABLE {_vec_table(created)} USING vec0("
        f"tenant_id TEXT PARTITION KEY, embedding float[{dimensions}] distance_metric=cosine,"
        f" chunk_size={_CHUNK_SIZE})"
    )
    return created


def _upsert(
    store: _TenantStore, collection: str, documents: Sequence[PreparedDocument], vectors: Sequence[Sequence[float]]
) -> int:
    conn, tenant_id = store.conn, store.tenant_id
    with conn:
        collection_id = _collection_id(store, collection, create=True)
        assert collection_id is not None
        table = _vec_table(collection_id)
        for document, vector in zip(documents, vectors, strict=True):
            rowid = _first(
                conn,
                "SELECT id FROM documents WHERE tenant_id = ? AND collection_id = ? AND doc_id = ?",
                (tenant_id, collection_id, document.id),
            )
            if rowid is None:
                rowid = _first(
                    conn,
                    "INSERT INTO documents (tenant_id, collection_id, doc_id, text, metadata) "
                    "VALUES (?, ?, ?, ?, ?) RETURNING id",
                    (tenant_id, collection_id, document.id, document.text, document.metadata_json),
                )
            else:
                conn.execute(
                    "UPDATE documents SET text = ?, metadata = ? WHERE id = ? AND tenant_id = ?",
                    (document.text, document.metadata_json, rowid, tenant_id),
                )
                conn.execute(f"DELETE FROM {table} WHERE rowid = ? AND tenant_id = ?", (rowid, tenant_id))  # noqa: S608
            conn.execute(
                f"INSERT INTO {table} (rowid, tenant_id, embedding) VALUES (?, ?, ?)",  # noqa: S608
                (rowid, tenant_id, _pack(vector)),
            )
    return len(documents)


def _search(store: _TenantStore, collection: str, vector: Sequence[float], limit: int) -> list[VectorMatch]:
    collection_id = _collection_id(store, collection, create=False)
    if collection_id is None:
        return []
    # The only interpolation is the table name, built from an integer id.
    table = _vec_table(collection_id)
    knn = f"SELECT rowid, distance FROM {table} WHERE embedding MATCH ? AND k = ? AND tenant_id = ?"  # noqa: S608
    sql = (
        f"SELECT d.doc_id, d.text, d.metadata, v.distance FROM ({knn}) AS v"  # noqa: S608
        " JOIN documents AS d ON d.id = v.rowid"
        " WHERE d.tenant_id = ? AND d.collection_id = ?"
        " ORDER BY v.distance, d.doc_id"
    )
    rows = store.conn.execute(sql, (_pack(vector), limit, store.tenant_id, store.tenant_id, collection_id))
    return [
        VectorMatch(
            id=str(doc_id),
            score=1.0 - float(distance),
            text=str(text),
            metadata=load_metadata(str(metadata)),
        )
        for doc_id, text, metadata, distance in rows
    ]


def _delete(store: _TenantStore, collection: str, ids: Sequence[str]) -> int:
    conn, tenant_id = store.conn, store.tenant_id
    with conn:
        collection_id = _collection_id(store, collection, create=False)
        if collection_id is None:
            return 0
        table = _vec_table(collection_id)
        deleted = 0
        for doc_id in ids:
            rowid = _first(
                conn,
                "DELETE FROM documents WHERE tenant_id = ? AND collection_id = ? AND doc_id = ? RETURNING id",
                (tenant_id, collection_id, doc_id),
            )
            if rowid is not None:
                conn.execute(f"DELETE FROM {table} WHERE rowid = ? AND tenant_id = ?", (rowid, tenant_id))  # noqa: S608
                deleted += 1
    return deleted


def _count(store: _TenantStore, collection: str) -> int:
    counted = _first(
        store.conn,
        "SELECT count(*) FROM documents AS d JOIN collections AS c ON c.id = d.collection_id"
        " WHERE d.tenant_id = ? AND c.tenant_id = ? AND c.name = ?",
        (store.tenant_id, store.tenant_id, collection),
    )
    return counted or 0
