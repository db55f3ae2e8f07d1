"""The behaviour every ``VectorStore`` backend must have, as a reusable test class.

A backend's test module subclasses ``VectorStoreConformance`` and provides an ``open_store``
fixture: a callable that opens the backend over the same underlying storage each time it is
called (so reopening can be tested), for vectors of dimension ``DIM``.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from keel.errors import StoreError
from keel.memory.base import MetadataValue, VectorRecord, VectorStore

DIM = 8
OpenStore = Callable[[], VectorStore]


def vec(*components: float) -> list[float]:
    """A DIM-dimensional vector starting with ``components``, zero-padded."""
    return [*components, *([0.0] * (DIM - len(components)))]


def record(id: str, vector: list[float], **metadata: MetadataValue) -> VectorRecord:
    return VectorRecord(id=id, vector=vector, text=f"text of {id}", metadata=metadata)


class VectorStoreConformance:
    """Subclass me and define the ``open_store`` fixture."""

    async def test_query_ranks_by_cosine_similarity(self, open_store: OpenStore) -> None:
        store = open_store()
        await store.upsert(
            "ns",
            [
                record("opposite", vec(-1.0)),
                record("same", vec(1.0)),
                record("orthogonal", vec(0.0, 1.0)),
                record("close", vec(0.8, 0.6)),
            ],
        )
        hits = await store.query("ns", vec(1.0), k=3)
        assert [h.id for h in hits] == ["same", "close", "orthogonal"]
        assert [h.score for h in hits] == pytest.approx([1.0, 0.8, 0.0], abs=1e-5)
        assert hits[0].text == "text of same"
        await store.close()

    async def test_scores_are_cosine_for_unnormalised_vectors(self, open_store: OpenStore) -> None:
        store = open_store()
        await store.upsert("ns", [record("long", vec(3.0, 4.0))])
        (hit,) = await store.query("ns", vec(10.0), k=1)
        assert hit.score == pytest.approx(0.6, abs=1e-5)
        await store.close()

    async def test_k_larger_than_the_namespace_and_empty_namespaces(
        self, open_store: OpenStore
    ) -> None:
        store = open_store()
        assert await store.query("nothing-here", vec(1.0), k=5) == []
        await store.upsert("ns", [record("a", vec(1.0)), record("b", vec(0.0, 1.0))])
        assert {h.id for h in await store.query("ns", vec(1.0), k=50)} == {"a", "b"}
        with pytest.raises(ValueError):
            await store.query("ns", vec(1.0), k=0)
        await store.close()

    async def test_namespaces_are_isolated(self, open_store: OpenStore) -> None:
        store = open_store()
        await store.upsert("left", [record("x", vec(1.0), side="left"), record("l2", vec(0.9))])
        await store.upsert("right", [record("x", vec(0.0, 1.0), side="right")])
        assert await store.count("left") == 2
        assert await store.count("right") == 1
        hits = await store.query("right", vec(1.0), k=10)
        assert [(h.id, h.metadata["side"]) for h in hits] == [("x", "right")]
        await store.delete("left", ["x"])
        assert await store.count("right") == 1
        assert [h.id for h in await store.query("right", vec(0.0, 1.0), k=1)] == ["x"]
        await store.close()

    async def test_upsert_replaces_a_record_with_the_same_id(self, open_store: OpenStore) -> None:
        store = open_store()
        await store.upsert("ns", [record("a", vec(1.0)), record("b", vec(0.0, 1.0))])
        new = VectorRecord(id="a", vector=vec(0.0, 0.0, 1.0), text="new", metadata={"v": 2})
        await store.upsert("ns", [new])
        assert await store.count("ns") == 2
        hits = await store.query("ns", vec(0.0, 0.0, 1.0), k=1)
        assert [(h.id, h.text, h.metadata) for h in hits] == [("a", "new", {"v": 2})]
        assert all(h.score < 0.5 for h in await store.query("ns", vec(1.0), k=2))
        await store.close()

    async def test_duplicate_ids_in_one_batch_keep_the_last(self, open_store: OpenStore) -> None:
        store = open_store()
        await store.upsert("ns", [record("a", vec(1.0)), record("a", vec(0.0, 1.0))])
        assert await store.count("ns") == 1
        (hit,) = await store.query("ns", vec(0.0, 1.0), k=5)
        assert hit.id == "a"
        assert hit.score == pytest.approx(1.0, abs=1e-5)
        await store.close()

    async def test_delete_removes_records_and_ignores_unknown_ids(
        self, open_store: OpenStore
    ) -> None:
        store = open_store()
        await store.upsert("ns", [record(i, vec(1.0, float(n))) for n, i in enumerate("abcd")])
        await store.delete("ns", ["b", "d", "never-existed"])
        assert await store.count("ns") == 2
        assert {h.id for h in await store.query("ns", vec(1.0), k=10)} == {"a", "c"}
        await store.delete("ns", [])
        await store.delete("other-namespace", ["a"])
        assert await store.count("ns") == 2
        await store.close()

    async def test_metadata_filter_is_an_exact_match(self, open_store: OpenStore) -> None:
        store = open_store()
        await store.upsert(
            "ns",
            [
                record("en1", vec(1.0), lang="en", n=1, flag=True),
                record("fr1", vec(0.9, 0.1), lang="fr", n=1, flag=False),
                record("fr2", vec(0.1, 0.9), lang="fr", n=2),
                record("de1", vec(1.0, 0.2), lang="de", n=1.5),
            ],
        )
        hits = await store.query("ns", vec(1.0), k=10, where={"lang": "fr"})
        assert [h.id for h in hits] == ["fr1", "fr2"]
        hits = await store.query("ns", vec(1.0), k=10, where={"lang": "fr", "n": 2})
        assert [h.id for h in hits] == ["fr2"]
        assert [h.id for h in await store.query("ns", vec(1.0), k=9, where={"flag": True})] == [
            "en1"
        ]
        assert await store.query("ns", vec(1.0), k=9, where={"n": True}) == []  # bool != 1
        assert await store.query("ns", vec(1.0), k=9, where={"lang": "es"}) == []
        assert await store.query("ns", vec(1.0), k=9, where={"missing": "x"}) == []
        hits = await store.query("ns", vec(1.0), k=9, where={"n": 1.5})
        assert [h.id for h in hits] == ["de1"]
        await store.close()

    async def test_filter_finds_a_match_ranked_far_below_k(self, open_store: OpenStore) -> None:
        store = open_store()
        records = [record(f"r{i}", vec(1.0, i / 100), tag="common") for i in range(60)]
        records.append(record("rare", vec(-1.0), tag="rare"))
        await store.upsert("ns", records)
        hits = await store.query("ns", vec(1.0), k=1, where={"tag": "rare"})
        assert [h.id for h in hits] == ["rare"]
        assert hits[0].score == pytest.approx(-1.0, abs=1e-5)
        await store.close()

    async def test_metadata_types_survive_a_round_trip(self, open_store: OpenStore) -> None:
        store = open_store()
        meta: dict[str, MetadataValue] = {"s": "x", "i": 3, "f": 0.5, "b": False}
        await store.upsert("ns", [VectorRecord(id="a", vector=vec(1.0), text="t", metadata=meta)])
        (hit,) = await store.query("ns", vec(1.0), k=1)
        assert hit.metadata == meta
        assert [type(hit.metadata[k]) for k in "sifb"] == [str, int, float, bool]
        await store.close()

    async def test_wrong_dimension_is_a_clear_error(self, open_store: OpenStore) -> None:
        store = open_store()
        bad = VectorRecord(id="bad", vector=[1.0] * (DIM + 1), text="t")
        with pytest.raises(StoreError, match="dimension"):
            await store.upsert("ns", [record("ok", vec(1.0)), bad])
        assert await store.count("ns") == 0  # the whole batch was refused
        with pytest.raises(StoreError, match="dimension"):
            await store.query("ns", [1.0] * (DIM - 1), k=1)
        await store.close()

    async def test_zero_vectors_are_refused(self, open_store: OpenStore) -> None:
        store = open_store()
        with pytest.raises(StoreError):
            await store.upsert("ns", [record("zero", vec())])
        with pytest.raises(StoreError):
            await store.query("ns", vec(), k=1)
        await store.close()

    async def test_records_persist_across_reopen(self, open_store: OpenStore) -> None:
        store = open_store()
        await store.upsert("ns", [record("a", vec(1.0), kind="x"), record("b", vec(0.0, 1.0))])
        await store.delete("ns", ["b"])
        await store.upsert("ns", [record("c", vec(0.6, 0.8))])
        await store.close()
        await store.close()  # closing twice is harmless

        reopened = open_store()
        assert await reopened.count("ns") == 2
        hits = await reopened.query("ns", vec(1.0), k=5)
        assert [h.id for h in hits] == ["a", "c"]
        assert hits[0].metadata == {"kind": "x"}
        await reopened.close()

    async def test_a_closed_store_refuses_work(self, open_store: OpenStore) -> None:
        store = open_store()
        await store.close()
        with pytest.raises(StoreError, match="closed"):
            await store.upsert("ns", [record("a", vec(1.0))])
        with pytest.raises(StoreError, match="closed"):
            await store.query("ns", vec(1.0), k=1)
