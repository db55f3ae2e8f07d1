"""Server vector backends on real embeddings: PgVectorStore (pgvector HNSW) and QdrantVectorStore
(qdrant-client local mode).

Corpus: the man-page chunks embedded by bench/ann_corpus.py (cached in bench/.cache/; run it
first). The last ``--queries`` vectors are the queries, the rest is indexed; ground truth is exact
inner-product search in numpy. PostgreSQL 16 + pgvector 0.6.2 comes from the pgserver wheel and
runs on this machine (as ``nobody`` under root), started here and stopped at the end.

For PgVectorStore: the store's own ``upsert`` with the HNSW index maintained row by row, on the
first ``--incremental`` records (slow: ~125 records/s on this loaded machine, 400 s for 49,500),
then the rest loaded without the index and one bulk ``CREATE INDEX`` (how a large corpus is
loaded); recall@10 against exact search and queries per second one query at a time through
``query()`` at several ``ef_search``; the HNSW index's size on disk; and a query in a small
namespace of the crowded table (the exact fallback path). For Qdrant local mode (an in-process
brute-force engine, no server): upsert time, QPS, recall and process memory growth on a subset
(``--qdrant-chunks``), because it is slow. Everything runs on the same 2 cores.

Run: .venv/bin/python bench/ann_servers.py [--chunks 50000] [--queries 500] [--incremental 5000]
     [--qdrant-chunks 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psycopg
from ann_metrics import K, Row, rss, tie_aware_recall

from keel.memory.base import VectorRecord, VectorStore
from keel.memory.pgvector_store import PgVectorStore
from keel.memory.qdrant_store import QdrantVectorStore

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent / "tests"))
from pgserver_fixture import start_postgres  # noqa: E402 - a test helper, found via tests/

EF_SEARCH = (40, 100, 200)
nan = float("nan")


def load(chunks: int, queries: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    path = HERE / ".cache" / f"manpages-{chunks}.npy"
    if not path.is_file():
        raise SystemExit(f"{path} is missing: run .venv/bin/python bench/ann_corpus.py first")
    matrix = np.load(path).astype(np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    data, qs = matrix[:-queries], matrix[-queries:]
    truth = np.argsort(-(qs @ data.T), axis=1)[:, :K]
    return data, qs, truth


def records(data: np.ndarray, start: int = 0) -> list[VectorRecord]:
    return [
        VectorRecord(id=str(start + i), vector=v.tolist(), text=f"chunk {start + i}")
        for i, v in enumerate(data)
    ]


async def upsert_all(store: VectorStore, namespace: str, recs: list[VectorRecord]) -> float:
    started = time.perf_counter()
    for begin in range(0, len(recs), 1000):
        await store.upsert(namespace, recs[begin : begin + 1000])
    return time.perf_counter() - started


async def search_all(
    store: VectorStore, namespace: str, qs: np.ndarray
) -> tuple[list[list[int]], float]:
    for q in qs[:10]:  # warm up
        await store.query(namespace, q.tolist(), K)
    started = time.perf_counter()
    found = [[int(h.id) for h in await store.query(namespace, q.tolist(), K)] for q in qs]
    return found, len(qs) / (time.perf_counter() - started)


async def pgvector(
    data: np.ndarray, qs: np.ndarray, truth: np.ndarray, incremental: int
) -> list[Row]:
    server = start_postgres()
    rows: list[Row] = []
    try:
        dsn = server.create_database("bench", extensions=["vector"])
        store = PgVectorStore(dsn, data.shape[1], table="bench")
        recs = records(data)
        # 1. The store's own write path with the HNSW index maintained row by row.
        first = recs[:incremental]
        print(f"pgvector: upsert {len(first)} records, HNSW maintained per row ...", flush=True)
        per_row = await upsert_all(store, "man", first)
        rate = len(first) / per_row
        print(f"  {per_row:.1f} s, {rate:.0f} records/s", flush=True)
        rows.append(Row(f"pgvector upsert with HNSW ({len(first)})", per_row, nan, 0.0, 0.0))
        # 2. Bulk load: the rest through upsert without the index, then one CREATE INDEX.
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("DROP INDEX keel.bench_hnsw")
        print(f"pgvector: upsert {len(recs) - len(first)} more without the index ...", flush=True)
        loaded = await upsert_all(store, "man", recs[incremental:])
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SET maintenance_work_mem = '512MB'")
            started = time.perf_counter()
            conn.execute(
                "CREATE INDEX bench_hnsw ON keel.bench USING hnsw "
                "(embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)"
            )
            indexed = time.perf_counter() - started
            table_mb = conn.execute("SELECT pg_total_relation_size('keel.bench')").fetchone()[0]
            index_mb = conn.execute("SELECT pg_relation_size('keel.bench_hnsw')").fetchone()[0]
        build = per_row + loaded + indexed
        print(
            f"  rows {loaded:.1f} s + CREATE INDEX {indexed:.1f} s; table+indexes "
            f"{table_mb / 1e6:.0f} MB, HNSW {index_mb / 1e6:.0f} MB",
            flush=True,
        )
        rows.append(Row("pgvector bulk CREATE INDEX (HNSW only)", indexed, nan, 0.0, 0.0))
        # 3. Queries one at a time through PgVectorStore.query().
        for ef in EF_SEARCH:
            store.ef_search = ef
            found, qps = await search_all(store, "man", qs)
            recall = tie_aware_recall(found, qs, truth, data)
            name = f"PgVectorStore HNSW ef_search={ef}"
            rows.append(Row(name, build, recall, qps, index_mb / 1e6))
            print(rows[-1].line(), flush=True)
        # 4. A small namespace in the crowded table: the HNSW candidates all come from "man",
        # so the store falls back to an exact scan of the small namespace's rows.
        await store.upsert("small", records(data[:300]))
        store.ef_search = 40
        found, qps = await search_all(store, "small", qs[:100])
        small_truth = np.argsort(-(qs[:100] @ data[:300].T), axis=1)[:, :K]
        recall = tie_aware_recall(found, qs[:100], small_truth, data[:300])
        rows.append(Row("PgVectorStore 300-row namespace (exact)", 0.0, recall, qps, 0.0))
        print(rows[-1].line(), flush=True)
        await store.close()
    finally:
        server.stop()
    return rows


async def qdrant(data: np.ndarray, qs: np.ndarray, n: int) -> list[Row]:
    subset = data[:n]
    truth = np.argsort(-(qs @ subset.T), axis=1)[:, :K]
    with tempfile.TemporaryDirectory() as tmp:
        before = rss()
        store = QdrantVectorStore(subset.shape[1], path=Path(tmp) / "qdrant")
        print(f"qdrant local: upserting {n} records ...", flush=True)
        build = await upsert_all(store, "man", records(subset))
        memory = (rss() - before) / 1e6
        found, qps = await search_all(store, "man", qs[:100])
        recall = tie_aware_recall(found, qs[:100], truth[:100], subset)
        await store.close()
    row = Row(f"QdrantVectorStore local mode ({n})", build, recall, qps, memory)
    print(row.line(), flush=True)
    return [row]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=50_000)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--qdrant-chunks", type=int, default=5_000)
    parser.add_argument(
        "--incremental",
        type=int,
        default=5_000,
        help="records upserted with the HNSW index in place (the rest are bulk-indexed)",
    )
    args = parser.parse_args()
    data, qs, truth = load(args.chunks, args.queries)
    print(f"{len(data)} vectors of dimension {data.shape[1]}, {len(qs)} queries, k={K}")
    print(Row.header(), flush=True)
    rows = await pgvector(data, qs, truth, min(args.incremental, len(data)))
    if args.qdrant_chunks > 0:
        rows += await qdrant(data, qs, min(args.qdrant_chunks, len(data)))
    print()
    print("summary (MB: HNSW index on disk for pgvector; process RSS growth for Qdrant local)")
    print(Row.header())
    for row in rows:
        print(row.line())


if __name__ == "__main__":
    asyncio.run(main())
