"""Input limits and embedding checks shared by every vector backend.

Everything here runs before a store is touched, so each backend refuses the same inputs
with the same :class:`UsageError` text.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tenantry.core.errors import StorageError, UsageError
from tenantry.scoping.vectors.base import Embedder, VectorDocument

__all__ = [
    "MAX_BATCH",
    "MAX_ID_CHARS",
    "MAX_LIMIT",
    "MAX_METADATA_BYTES",
    "MAX_TEXT_BYTES",
    "PreparedDocument",
    "validate_collection",
    "validate_documents",
    "validate_ids",
    "validate_limit",
    "validate_query",
    "load_metadata",
    "embed_checked",
]

COLLECTION_PATTERN = re.compile(r"[a-z0-9_]{1,63}")
MAX_ID_CHARS = 256
MAX_TEXT_BYTES = 100_000
MAX_METADATA_BYTES = 16 * 1024
MAX_LIMIT = 100
MAX_BATCH = 1000


@dataclass(frozen=True, slots=True)
class PreparedDocument:
    id: str
    text: str
    metadata: dict[str, Any]
    metadata_json: str


def validate_collection(collection: str) -> str:
    if not isinstance(collection, str) or COLLECTION_PATTERN.fullmatch(collection) is None:
        raise UsageError("collection must be 1-63 lowercase letters, digits or underscores")
    return collection


def _validate_id(doc_id: object) -> str:
    if not isinstance(doc_id, str) or not 1 <= len(doc_id) <= MAX_ID_CHARS or not doc_id.isprintable():
        raise UsageError(f"document id must be 1-{MAX_ID_CHARS} printable characters")
    return doc_id


def _utf8(text: str, what: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError(f"{what} is not valid Unicode (lone surrogate)") from None


def _validate_text(text: object, what: str) -> str:
    if not isinstance(text, str):
        raise UsageError(f"{what} must be a string")
    if len(_utf8(text, what)) > MAX_TEXT_BYTES:
        raise UsageError(f"{what} is larger than {MAX_TEXT_BYTES} bytes")
    if not text.strip():
        raise UsageError(f"{what} is empty")
    return text


def _metadata_json(metadata: object) -> tuple[dict[str, Any], str]:
    if not isinstance(metadata, Mapping):
        raise UsageError("metadata must be a JSON object (a dict with string keys)")
    as_dict = dict(metadata)
    if not all(isinstance(key, str) for key in as_dict):
        raise UsageError("metadata keys must be strings")
    try:
        encoded = json.dumps(as_dict, ensure_ascii=False, allow_nan=False, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError):
        raise UsageError("metadata must be JSON-serialisable (no NaN, no custom objects)") from None
    if len(_utf8(encoded, "metadata")) > MAX_METADATA_BYTES:
        raise UsageError(f"metadata is larger than {MAX_METADATA_BYTES} bytes as JSON")
    # Round-trip so that what is returned later equals what JSON can hold (tuples become lists, ...).
    loaded: dict[str, Any] = json.loads(encoded)
    return loaded, encoded


def validate_documents(documents: Sequence[VectorDocument]) -> list[PreparedDocument]:
    """:raises UsageError: for a batch that is not a sequence of documents, too large, or
    with a duplicate id, an invalid id, text or metadata."""
    if isinstance(documents, (str, bytes, VectorDocument)) or not isinstance(documents, Sequence):
        raise UsageError("documents must be a list of VectorDocument")
    if len(documents) > MAX_BATCH:
        raise UsageError(f"at most {MAX_BATCH} documents per call")
    prepared: list[PreparedDocument] = []
    seen: set[str] = set()
    for document in documents:
        if not isinstance(document, VectorDocument):
            raise UsageError("documents must be a list of VectorDocument")
        doc_id = _validate_id(document.id)
        if doc_id in seen:
            raise UsageError("a document id appears twice in one call")
        seen.add(doc_id)
        text = _validate_text(document.text, "document text")
        metadata, metadata_json = _metadata_json(document.metadata)
        prepared.append(PreparedDocument(doc_id, text, metadata, metadata_json))
    return prepared


def validate_ids(ids: Sequence[str]) -> list[str]:
    """Distinct ids, in first-seen order.

    :raises UsageError: for a bare string (a common slip for ``[id]``), too many or invalid ids.
    """
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Sequence):
        raise UsageError("ids must be a list of document ids")
    if len(ids) > MAX_BATCH:
        raise UsageError(f"at most {MAX_BATCH} ids per call")
    return list(dict.fromkeys(_validate_id(doc_id) for doc_id in ids))


def validate_limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise UsageError(f"limit must be an integer from 1 to {MAX_LIMIT}")
    return limit


def validate_query(query: str) -> str:
    return _validate_text(query, "query")


def load_metadata(encoded: str) -> dict[str, Any]:
    loaded = json.loads(encoded)
    return loaded if isinstance(loaded, dict) else {}


def embed_checked(embedder: Embedder, texts: Sequence[str]) -> list[list[float]]:
    """Embed in the calling (worker) thread and check the result's shape.

    :raises UsageError: when a text embeds to the zero vector (nothing to compare).
    :raises StorageError: when the embedder fails or returns the wrong shape.
    """
    try:
        vectors = embedder.embed(list(texts))
    except Exception as exc:
        raise StorageError(f"the embedder {embedder.name!r} failed ({type(exc).__name__})") from None
    if len(vectors) != len(texts):
        raise StorageError(f"the embedder {embedder.name!r} returned {len(vectors)} vectors for {len(texts)} texts")
    checked: list[list[float]] = []
    for vector in vectors:
        floats = [float(x) for x in vector]
        if len(floats) != embedder.dimensions or not all(math.isfinite(x) for x in floats):
            raise StorageError(
                f"the embedder {embedder.name!r} returned a vector that is not {embedder.dimensions} finite numbers"
            )
        if not any(floats):
            raise UsageError("text has nothing to embed (no words)")
        checked.append(floats)
    return checked
