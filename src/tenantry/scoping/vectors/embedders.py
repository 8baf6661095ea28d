"""Embedders: the offline default, and loading one named in settings.

:class:`HashingEmbedder` needs no model and no network: it hashes words and character
trigrams into a fixed number of signed buckets. It finds texts that share words or
word fragments, not texts that share meaning without sharing words; for semantic search,
plug in a real model.

A real model is any object with ``name``, ``dimensions`` and a thread-safe ``embed``
(see :class:`~tenantry.scoping.vectors.base.Embedder`), named in settings as
``module:object``. For example, with ``sentence-transformers`` installed::

    # mycompany/embedding.py
    from sentence_transformers import SentenceTransformer

    class MiniLM:
        name = "all-MiniLM-L6-v2"
        dimensions = 384

        def __init__(self) -> None:
            self._model = SentenceTransformer("sentence-transformers/all-MiniLM-L6-v2")

        def embed(self, texts):
            return self._model.encode(list(texts), normalize_embeddings=True).tolist()

and ``TENANTRY_VECTORS__EMBEDDER=mycompany.embedding:MiniLM``,
``TENANTRY_VECTORS__DIMENSIONS=384``. A store remembers which embedder filled it and
refuses another one, so changing the model means re-indexing.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from typing import Any

from tenantry.core.errors import UsageError
from tenantry.scoping.vectors.base import Embedder

__all__ = ["HashingEmbedder", "load_embedder"]

_WORD = re.compile(r"\w+")
_WORD_WEIGHT = 1.0
# Trigrams let "invoice" meet "invoices"; weighted down so that whole words still decide.
_TRIGRAM_WEIGHT = 0.5
_HASH_PERSON = b"tenantry-hash-v1"


@functools.lru_cache(maxsize=1 << 16)
def _slot(feature: str, dimensions: int) -> tuple[int, float]:
    digest = hashlib.blake2b(feature.encode("utf-8"), digest_size=8, person=_HASH_PERSON).digest()
    value = int.from_bytes(digest, "little")
    # The top bit chooses the sign, so colliding features cancel out on average instead of adding up.
    return value % dimensions, (1.0 if value >> 63 else -1.0)


def _features(text: str) -> Counter[str]:
    counts: Counter[str] = Counter()
    for word in _WORD.findall(unicodedata.normalize("NFKC", text).casefold()):
        counts["w:" + word] += 1
        padded = f"<{word}>"
        for start in range(len(padded) - 2):
            counts["c:" + padded[start : start + 3]] += 1
    return counts


class HashingEmbedder:
    """Feature hashing of lower-cased word unigrams and character trigrams, L2-normalised.

    Deterministic across processes and machines (BLAKE2b, not :func:`hash`). A text with no
    word characters embeds to the zero vector.

    :param dimensions: number of buckets, 8 to 4096.
    :raises UsageError: for a dimension outside that range.
    """

    def __init__(self, dimensions: int = 384) -> None:
        if isinstance(dimensions, bool) or not isinstance(dimensions, int) or not 8 <= dimensions <= 4096:
            raise UsageError("hashing embedder dimensions must be an integer from 8 to 4096")
        self._dimensions = dimensions

    @property
    def name(self) -> str:
        return f"hashing-v1-{self._dimensions}"

    @property
    def dimensions(self) -> int:
        return self._dimensions

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return [self._embed_one(text) for text in texts]

    def _embed_one(self, text: str) -> list[float]:
        vector = [0.0] * self._dimensions
        for feature, count in _features(text).items():
            bucket, sign = _slot(feature, self._dimensions)
            weight = _WORD_WEIGHT if feature.startswith("w:") else _TRIGRAM_WEIGHT
            vector[bucket] += sign * weight * (1.0 + math.log(count))
        norm = math.sqrt(sum(x * x for x in vector))
        if norm == 0.0:
            return vector
        return [x / norm for x in vector]


def load_embedder(spec: str, dimensions: int) -> Embedder:
    """Build the embedder named in settings.

    :param spec: ``hashing``, or ``module:object`` where ``object`` (dotted attributes allowed)
        is an embedder instance, or a class or factory called with no arguments that returns one.
    :param dimensions: the configured dimension; the embedder must produce exactly this many.
    :raises UsageError: when the module or object cannot be found or built, is not an
        embedder, or produces another dimension.
    """
    if spec == "hashing":
        return HashingEmbedder(dimensions)
    module_name, sep, object_path = spec.partition(":")
    if not sep or not module_name or not object_path:
        raise UsageError(f"embedder must be 'hashing' or 'module:object', got {spec!r}")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"cannot import embedder module {module_name!r}: {exc}") from None
    for attribute in object_path.split("."):
        try:
            target = getattr(target, attribute)
        except AttributeError:
            raise UsageError(f"embedder {spec!r}: {module_name!r} has no attribute {object_path!r}") from None
    if isinstance(target, type) or (callable(target) and not hasattr(target, "embed")):
        try:
            target = target()
        except Exception as exc:
            raise UsageError(f"embedder {spec!r} could not be created: {type(exc).__name__}: {exc}") from None
    return _checked(spec, target, dimensions)


def _checked(spec: str, candidate: Any, dimensions: int) -> Embedder:
    if not callable(getattr(candidate, "embed", None)):
        raise UsageError(f"embedder {spec!r} has no embed(texts) method")
    name = getattr(candidate, "name", None)
    if not isinstance(name, str) or not name:
        raise UsageError(f"embedder {spec!r} has no name (a non-empty string)")
    produced = getattr(candidate, "dimensions", None)
    if isinstance(produced, bool) or not isinstance(produced, int) or produced <= 0:
        raise UsageError(f"embedder {spec!r} has no dimensions (a positive integer)")
    if produced != dimensions:
        raise UsageError(
            f"embedder {name!r} produces {produced} dimensions but the settings say {dimensions}; "
            "set TENANTRY_VECTORS__DIMENSIONS to match"
        )
    embedder: Embedder = candidate
    return embedder
