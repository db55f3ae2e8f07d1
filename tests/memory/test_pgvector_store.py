"""The pgvector store against a real PostgreSQL 16 + pgvector server started for the session."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import psycopg
import pytest
from vector_store_conformance import DIM, OpenStore, VectorStoreConformance, record, vec

from keel.errors import StoreError
from keel.memory.base import KeywordSearch, VectorRecord
from keel.memory.pgvector_store import PgVectorStore
from keel.memory.retrieval import Retriever
from keel.memory.testing import HashingEmbedder
from pgserver_fixture import PostgresServer, postgres_server  # noqa: F401 - session fixture


@pytest.fixture(scope="module")
def pg_dsn(postgres_server: PostgresServer) -> str:  # noqa: F811 - the imported fixture
    return postgres_server.create_database("keel_vectors")


def fresh_table() -> str:
    return f"v_{uuid.uuid4().hex[:12]}"


class TestPgVectorStore(VectorStoreConformance):
    @pytest.fixture
    def open_store(self, pg_dsn: str) -> OpenStore:
        table = fresh_table()
        return lambda: PgVectorStore(pg_dsn, DIM, table=table)


@pytest.fixture
def make_store(pg_dsn: str) -> Callable[..., PgVectorStore]:
    table = fresh_table()
    return lambda dim=DIM, **kw: PgVectorStore(pg_dsn, dim, table=table, **kw)


async def test_the_table_has_an_hnsw_cosine_index_and_is_used(
    make_store: Callable[..., PgVectorStore], pg_dsn: str
) -> None:
    store = make_store()
    await store.upsert("ns", [record(f"r{i}", vec(1.0, i / 50)) for i in range(50)])
    await store.close()
    with psycopg.connect(pg_dsn) as conn:
        indexes = conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = 'keel' AND tablename = %s",
            (store.table,),
        ).fetchall()
        assert any("hnsw" in d and "vector_cosine_ops" in d for (d,) in indexes)
        conn.execute("SET enable_seqscan = off")
        plan = conn.execute(
            f"EXPLAIN SELECT id FROM keel.{store.table} ORDER BY embedding <=> %s::vector LIMIT 5",
            ("[" + ",".join(["1"] * DIM) + "]",),
        ).fetchall()
        assert "_hnsw" in " ".join(line for (line,) in plan)


async def test_many_namespaces_with_a_filtered_hnsw_scan_still_return_k(
    make_store: Callable[..., PgVectorStore],
) -> None:
    # 400 records in a crowded namespace all nearer the query than the 30 of a small one: the
    # HNSW candidates (ef_search=10) are all from the crowded namespace, so the store must fall
    # back to an exact scan of the small one instead of returning fewer than k.
    store = make_store(ef_search=10)
    await store.upsert("crowded", [record(f"c{i}", vec(1.0, i / 1000)) for i in range(400)])
    await store.upsert("small", [record(f"s{i}", vec(0.2, 1.0, i / 30)) for i in range(30)])
    hits = await store.query("small", vec(1.0), k=20)
    assert len(hits) == 20
    assert all(h.id.startswith("s") for h in hits)
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert len(await store.query("crowded", vec(1.0), k=20)) == 20
    assert await store.namespaces() == {"crowded": 400, "small": 30}
    await store.close()


async def test_keyword_search_ranks_by_full_text_and_respects_namespace_and_filter(
    make_store: Callable[..., PgVectorStore],
) -> None:
    store = make_store()
    assert isinstance(store, KeywordSearch)
    docs = {
        "cats": "Cats are small carnivorous mammals; cats purr.",
        "dogs": "Dogs are loyal companions and bark at strangers.",
        "both": "Cats and dogs can live together peacefully.",
    }
    await store.upsert(
        "ns",
        [
            VectorRecord(id=i, vector=vec(1.0, n), text=t, metadata={"n": n})
            for n, (i, t) in enumerate(docs.items())
        ],
    )
    await store.upsert("other", [VectorRecord(id="x", vector=vec(1.0), text="cats cats cats")])
    hits = await store.keyword_query("ns", "cat purring", k=5)
    assert [h.id for h in hits] == ["cats", "both"]  # stemmed: cat = cats, purring = purr
    assert hits[0].score > hits[1].score > 0
    assert [h.id for h in await store.keyword_query("ns", "cats", k=5, where={"n": 2})] == ["both"]
    assert await store.keyword_query("ns", "the and of", k=5) == []  # stop words only
    assert await store.keyword_query("ns", "  ...  ", k=5) == []
    assert await store.keyword_query("ns", "l'homme 'quoted' a|b & !x", k=5) == []
    await store.close()


async def test_hybrid_retrieval_works_on_pgvector(
    make_store: Callable[..., PgVectorStore],
) -> None:
    embedder = HashingEmbedder(dimension=64)
    store = make_store(64)
    texts = [
        "The HNSW index finds approximate nearest neighbours quickly.",
        "PostgreSQL stores rows in heap pages.",
        "Reciprocal rank fusion merges keyword and vector rankings.",
    ]
    vectors = await embedder.embed(texts)
    await store.upsert(
        "docs",
        [
            VectorRecord(id=f"d{i}", vector=v, text=t)
            for i, (t, v) in enumerate(zip(texts, vectors, strict=True))
        ],
    )
    retriever = Retriever(store, embedder, mode="hybrid")
    hits = await retriever.retrieve("reciprocal rank fusion", "docs", k=2)
    assert hits[0].id == "d2"
    await store.close()


async def test_reopening_with_another_dimension_is_refused(
    make_store: Callable[..., PgVectorStore],
) -> None:
    store = make_store()
    await store.upsert("ns", [record("a", vec(1.0))])
    await store.close()
    other = make_store(DIM * 2)
    with pytest.raises(StoreError, match=f"dimension {DIM}, not {DIM * 2}"):
        await other.count("ns")
    await other.close()


async def test_a_wrong_password_is_a_store_error_without_the_password(
    postgres_server: PostgresServer,  # noqa: F811
) -> None:
    dsn = postgres_server.conninfo("keel_vectors", password=False) + " password=hunter2-secret"
    store = PgVectorStore(dsn, DIM, table=fresh_table())
    with pytest.raises(StoreError, match="cannot connect") as caught:
        await store.count("ns")
    assert "hunter2-secret" not in str(caught.value)
    with pytest.raises(StoreError, match="invalid PostgreSQL connection string"):
        PgVectorStore("host='unterminated password=hunter2", DIM)


def test_bad_names_and_parameters_are_refused(pg_dsn: str) -> None:
    with pytest.raises(ValueError, match="table"):
        PgVectorStore(pg_dsn, DIM, table="x; DROP TABLE y")
    with pytest.raises(ValueError, match="ef_search"):
        PgVectorStore(pg_dsn, DIM, ef_search=5000)
    with pytest.raises(ValueError, match="dimension"):
        PgVectorStore(pg_dsn, 0)


async def test_a_store_survives_a_second_event_loop(
    make_store: Callable[..., PgVectorStore],
) -> None:
    import asyncio
    import threading

    store = make_store()
    await store.upsert("ns", [record("a", vec(1.0))])
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(asyncio.run(store.count("ns"))))
    thread.start()
    thread.join()
    assert result == [1]
    assert await store.count("ns") == 1
    await store.close()


async def test_bulk_writes_refresh_the_planner_statistics(
    make_store: Callable[..., PgVectorStore], pg_dsn: str
) -> None:
    # Without fresh statistics the planner takes a just-loaded table for tiny and sorts every
    # row instead of using the HNSW index; the store runs ANALYZE after bulk writes.
    store = make_store()
    await store.upsert("ns", [record(f"r{i}", vec(1.0, i / 2000)) for i in range(1200)])
    with psycopg.connect(pg_dsn) as conn:
        row = conn.execute(
            "SELECT reltuples FROM pg_class WHERE oid = %s::regclass",
            (f"keel.{store.table}",),
        ).fetchone()
        assert row is not None and row[0] == 1200
        plan = conn.execute(
            f"EXPLAIN SELECT id FROM keel.{store.table} WHERE namespace = 'ns' "
            "ORDER BY embedding <=> %s::vector LIMIT 5",
            ("[" + ",".join(["1"] * DIM) + "]",),
        ).fetchall()
    assert "_hnsw" in " ".join(line for (line,) in plan)
    assert len(await store.query("ns", vec(1.0), k=5)) == 5
    await store.close()
