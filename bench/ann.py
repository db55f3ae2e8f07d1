"""ANN comparison on real embeddings: Keel's embedded store vs the index libraries it could wrap.

Corpus: man-page chunks embedded by bench/ann_corpus.py (run it first; it caches the matrix in
bench/.cache/). The last ``--queries`` vectors are the queries, the rest is indexed. Ground truth
is exact inner-product search (faiss ``IndexFlatIP``). For each index: build time, recall@10
against exact search, queries per second one query at a time, and the index's memory (its
serialised size, or the RSS growth while building where no serialisation exists).

Run: .venv/bin/python bench/ann.py [--chunks 50000] [--queries 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from ann_metrics import K, rss, tie_aware_recall

from keel.memory.base import VectorRecord
from keel.memory.sqlite_store import SQLiteVectorStore

HERE = Path(__file__).parent

DATA: np.ndarray = np.zeros((0, 0), dtype=np.float32)
"""The indexed vectors, for scoring what an index returned."""


def measure(
    name: str,
    build: Callable[[], Any],
    search: Callable[[Any, np.ndarray], list[int]],
    queries: np.ndarray,
    truth: np.ndarray,
    size: Callable[[Any], int] | None = None,
) -> tuple[str, float, float, float, float]:
    before = rss()
    started = time.perf_counter()
    index = build()
    built = time.perf_counter() - started
    memory = size(index) if size is not None else rss() - before
    for q in queries[:20]:  # warm up
        search(index, q)
    started = time.perf_counter()
    found = [search(index, q) for q in queries]
    qps = len(queries) / (time.perf_counter() - started)
    recall = tie_aware_recall(found, queries, truth, DATA)
    row = (name, built, recall, qps, memory / 1e6)
    print(f"{name:<34} {built:8.1f} {recall:9.3f} {qps:9.0f} {memory / 1e6:9.1f}", flush=True)
    return row


def faiss_hnsw(data: np.ndarray, ef_search: int) -> Callable[[], Any]:
    def build() -> Any:
        index = faiss.IndexHNSWFlat(data.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 200
        index.add(data)
        index.hnsw.efSearch = ef_search
        return index

    return build


def faiss_search(index: Any, q: np.ndarray) -> list[int]:
    return [int(i) for i in index.search(q.reshape(1, -1), K)[1][0]]


def faiss_size(index: Any) -> int:
    return int(faiss.serialize_index(index).nbytes)


def usearch_rows(data: np.ndarray, queries: np.ndarray, truth: np.ndarray) -> None:
    try:
        from usearch.index import Index
    except ImportError:
        print("usearch: not installed (pip install usearch)")
        return
    for ef in (64, 128):

        def build(ef: int = ef) -> Any:
            index = Index(
                ndim=data.shape[1],
                metric="ip",
                connectivity=32,
                expansion_add=200,
                expansion_search=ef,
            )
            index.add(np.arange(len(data)), data)
            return index

        measure(
            f"usearch HNSW M=32 ef={ef}",
            build,
            lambda index, q: [int(k) for k in index.search(q, K).keys],
            queries,
            truth,
            lambda index: int(index.memory_usage),
        )


def keel_store(data: np.ndarray, queries: np.ndarray, truth: np.ndarray, workdir: Path) -> None:
    """Keel's embedded store end to end: SQLite records + faiss index, hits hydrated from SQLite."""
    store = SQLiteVectorStore(workdir / "keel.db", data.shape[1])
    loop = asyncio.new_event_loop()

    def build() -> SQLiteVectorStore:
        for start in range(0, len(data), 5000):
            records = [
                VectorRecord(id=str(i), vector=data[i].tolist(), text=f"chunk {i}")
                for i in range(start, min(start + 5000, len(data)))
            ]
            loop.run_until_complete(store.upsert("ann", records))
        loop.run_until_complete(store.query("ann", data[0].tolist(), K))  # loads the index
        return store

    def search(s: SQLiteVectorStore, q: np.ndarray) -> list[int]:
        return [int(h.id) for h in loop.run_until_complete(s.query("ann", q.tolist(), K))]

    measure(
        "Keel SQLiteVectorStore (exact)",
        build,
        search,
        queries,
        truth,
        lambda s: (workdir / "keel.db").stat().st_size,
    )
    loop.run_until_complete(store.close())
    loop.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=50_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1, help="search threads (default 1)")
    args = parser.parse_args()
    path = HERE / ".cache" / f"manpages-{args.chunks}.npy"
    if not path.is_file():
        raise SystemExit(f"{path} is missing: run bench/ann_corpus.py --chunks {args.chunks}")
    faiss.omp_set_num_threads(args.threads)
    matrix = np.load(path).astype(np.float32)
    data, queries = matrix[: -args.queries], matrix[-args.queries :]
    global DATA
    DATA = data
    exact = faiss.IndexFlatIP(data.shape[1])
    exact.add(data)
    truth = exact.search(queries, K)[1]
    print(
        f"{len(data)} vectors x {data.shape[1]}, {len(queries)} queries, recall@{K}, "
        f"one query at a time, {args.threads} search thread(s)"
    )
    print(f"{'index':<34} {'build s':>8} {'recall':>9} {'QPS':>9} {'MB':>9}")
    measure("faiss flat (exact)", lambda: exact, faiss_search, queries, truth, faiss_size)
    for ef in (64, 128):
        measure(
            f"faiss HNSW M=32 ef={ef}",
            faiss_hnsw(data, ef),
            faiss_search,
            queries,
            truth,
            faiss_size,
        )
    usearch_rows(data, queries, truth)
    with tempfile.TemporaryDirectory() as workdir:
        keel_store(data, queries, truth, Path(workdir))


if __name__ == "__main__":
    main()
