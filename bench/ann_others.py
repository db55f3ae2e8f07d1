"""The ANN comparison's other contestants: Chroma and qdrant-client local mode.

Same corpus, queries and ground truth as bench/ann.py (exact inner product, computed here with
numpy). It imports no Keel code, so it can run in a separate virtualenv that keeps chromadb's and
qdrant-client's dependencies out of Keel's:

    python3 -m venv /tmp/annvenv && /tmp/annvenv/bin/pip install chromadb qdrant-client numpy psutil
    /tmp/annvenv/bin/python bench/ann_others.py [--chunks 50000] [--queries 1000]

qdrant-client's local mode is exact (brute force) and slow, so it answers only ``--qdrant-queries``
of the queries (default 100).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from ann_metrics import K, rss, tie_aware_recall

HERE = Path(__file__).parent

DATA: np.ndarray = np.zeros((0, 0), dtype=np.float32)
"""The indexed vectors, for scoring what an index returned."""


def report(
    name: str,
    build: Callable[[], Any],
    search: Callable[[Any, np.ndarray], list[int]],
    queries: np.ndarray,
    truth: np.ndarray,
) -> None:
    before = rss()
    started = time.perf_counter()
    index = build()
    built = time.perf_counter() - started
    memory = rss() - before
    started = time.perf_counter()
    found = [search(index, q) for q in queries]
    qps = len(queries) / (time.perf_counter() - started)
    recall = tie_aware_recall(found, queries, truth, DATA)
    print(f"{name:<34} {built:8.1f} {recall:9.3f} {qps:9.1f} {memory / 1e6:9.1f}", flush=True)


def chroma(data: np.ndarray, workdir: str) -> tuple[Callable[[], Any], Callable[..., list[int]]]:
    import chromadb

    def build() -> Any:
        client = chromadb.PersistentClient(path=workdir)
        collection = client.create_collection(
            "ann", metadata={"hnsw:space": "ip"}, embedding_function=None
        )
        step = 5000
        for start in range(0, len(data), step):
            part = data[start : start + step]
            collection.add(
                ids=[str(i) for i in range(start, start + len(part))], embeddings=part.tolist()
            )
        return collection

    def search(collection: Any, q: np.ndarray) -> list[int]:
        result = collection.query(query_embeddings=[q.tolist()], n_results=K)
        return [int(i) for i in result["ids"][0]]

    return build, search


def qdrant(data: np.ndarray, workdir: str) -> tuple[Callable[[], Any], Callable[..., list[int]]]:
    from qdrant_client import QdrantClient, models

    def build() -> Any:
        client = QdrantClient(path=workdir)
        client.create_collection(
            "ann",
            vectors_config=models.VectorParams(size=data.shape[1], distance=models.Distance.DOT),
        )
        for start in range(0, len(data), 5000):
            part = data[start : start + 5000]
            client.upload_collection("ann", vectors=part, ids=list(range(start, start + len(part))))
        return client

    def search(client: Any, q: np.ndarray) -> list[int]:
        points = client.query_points("ann", query=q.tolist(), limit=K).points
        return [int(p.id) for p in points]

    return build, search


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=50_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--qdrant-queries", type=int, default=100)
    args = parser.parse_args()
    matrix = np.load(HERE / ".cache" / f"manpages-{args.chunks}.npy").astype(np.float32)
    data, queries = matrix[: -args.queries], matrix[-args.queries :]
    global DATA
    DATA = data
    truth = np.argsort(-(queries @ data.T), axis=1)[:, :K]
    print(f"{len(data)} vectors x {data.shape[1]}, {len(queries)} queries, recall@{K}")
    print(f"{'index':<34} {'build s':>8} {'recall':>9} {'QPS':>9} {'MB (RSS)':>9}")
    with tempfile.TemporaryDirectory() as workdir:
        import chromadb

        build, search = chroma(data, workdir)
        report(f"chroma {chromadb.__version__} (HNSW)", build, search, queries, truth)
    with tempfile.TemporaryDirectory() as workdir:
        from importlib.metadata import version

        build, search = qdrant(data, workdir)
        n = args.qdrant_queries
        report(
            f"qdrant-client {version('qdrant-client')} local", build, search, queries[:n], truth[:n]
        )


if __name__ == "__main__":
    main()
