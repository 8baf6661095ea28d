"""The offline hashing embedder, and loading an embedder named in settings."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tenantry.core.errors import UsageError
from tenantry.scoping.vectors.embedders import HashingEmbedder, load_embedder


def _cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def test_name_and_dimensions() -> None:
    embedder = HashingEmbedder()
    assert embedder.name == "hashing-v1-384"
    assert embedder.dimensions == 384
    assert HashingEmbedder(64).name == "hashing-v1-64"
    assert all(len(v) == 64 for v in HashingEmbedder(64).embed(["one", "two words"]))


@pytest.mark.parametrize("dimensions", [0, 7, 4097, True])
def test_out_of_range_dimensions_are_refused(dimensions: int) -> None:
    with pytest.raises(UsageError):
        HashingEmbedder(dimensions)


def test_same_text_gives_the_same_vector() -> None:
    text = "Quarterly invoice totals for ACME"
    assert HashingEmbedder().embed([text]) == HashingEmbedder().embed([text])


def test_vectors_do_not_depend_on_the_process_hash_seed() -> None:
    script = "import json; from tenantry.scoping.vectors.embedders import HashingEmbedder; " + (
        "print(json.dumps(HashingEmbedder(32).embed(['invoice totals for acme'])[0]))"
    )
    outputs = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
        outputs.add(result.stdout)
    assert len(outputs) == 1
    assert json.loads(outputs.pop()) == HashingEmbedder(32).embed(["invoice totals for acme"])[0]


@pytest.mark.parametrize("text", ["invoice", "The cat sat on the mat.", "Ünïcödé wörds 123", "x" * 5000])
def test_vectors_are_unit_length(text: str) -> None:
    [vector] = HashingEmbedder().embed([text])
    assert math.isclose(math.sqrt(sum(x * x for x in vector)), 1.0, rel_tol=1e-9)


@pytest.mark.parametrize("text", ["", "   ", "!!! ???"])
def test_text_without_words_embeds_to_zero(text: str) -> None:
    assert not any(HashingEmbedder().embed([text])[0])


def test_case_does_not_matter() -> None:
    assert HashingEmbedder().embed(["Invoice TOTALS"]) == HashingEmbedder().embed(["invoice totals"])


def test_similar_texts_are_closer_than_unrelated_ones() -> None:
    query, similar, unrelated = HashingEmbedder().embed(
        ["the invoice was paid late", "late payment of an invoice", "mountain weather forecast for tomorrow"]
    )
    assert _cosine(query, similar) > _cosine(query, unrelated) + 0.2


def test_word_fragments_bring_inflections_together() -> None:
    query, plural, unrelated = HashingEmbedder().embed(["invoices", "invoice", "weather"])
    assert _cosine(query, plural) > 0.3 > _cosine(query, unrelated)


# -- load_embedder ------------------------------------------------------------------------


@pytest.fixture
def toy_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    source = textwrap.dedent(
        """
        class Toy:
            name = "toy"
            dimensions = 4

            def embed(self, texts):
                return [[1.0, 0.0, 0.0, 0.0] for _ in texts]

        INSTANCE = Toy()

        def make_toy():
            return Toy()

        def broken_factory():
            raise RuntimeError("no model here")

        class NoEmbed:
            name = "noembed"
            dimensions = 4

        class NoName(Toy):
            name = ""

        class NoDimensions(Toy):
            dimensions = "four"

        class Holder:
            inner = INSTANCE
        """
    )
    (tmp_path / "toy_embedders.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "toy_embedders"


def test_hashing_is_the_builtin_embedder() -> None:
    embedder = load_embedder("hashing", 128)
    assert isinstance(embedder, HashingEmbedder)
    assert embedder.dimensions == 128


@pytest.mark.parametrize("target", ["Toy", "INSTANCE", "make_toy", "Holder.inner"])
def test_a_class_instance_or_factory_can_be_named(toy_module: str, target: str) -> None:
    embedder = load_embedder(f"{toy_module}:{target}", 4)
    assert embedder.name == "toy"
    assert embedder.embed(["a"]) == [[1.0, 0.0, 0.0, 0.0]]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("sentence-transformers", "'hashing' or 'module:object'"),
        ("toy_embedders:", "'hashing' or 'module:object'"),
        (":Toy", "'hashing' or 'module:object'"),
        ("no_such_module_xyz:Toy", "cannot import"),
        ("toy_embedders:Missing", "has no attribute"),
        ("toy_embedders:broken_factory", "could not be created"),
        ("toy_embedders:NoEmbed", "no embed"),
        ("toy_embedders:NoName", "no name"),
        ("toy_embedders:NoDimensions", "no dimensions"),
    ],
)
def test_unusable_embedders_are_refused_with_a_clear_message(toy_module: str, spec: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        load_embedder(spec, 4)


def test_an_embedder_of_another_dimension_is_refused(toy_module: str) -> None:
    with pytest.raises(UsageError, match="produces 4 dimensions but the settings say 384"):
        load_embedder("toy_embedders:Toy", 384)
