"""Executor overhead and ingestion on a loopback Ray head versus in-process.

Starts its own Ray head (``LocalRayHead``, 127.0.0.1, stopped by its own pids) and prints: the
head's start-up time, per-item overhead of ``Executor.map`` on trivial items (local, Ray), and the
wall time of ingesting a generated corpus in-process and on Ray (hashing embedder, so the figure
is the cost of the plumbing, not of a model). Run: ``.venv/bin/python bench/distributed.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
import ray  # imported here, after the loopback setting above (docs/scale.md)

from keel.distributed import Executor, LocalExecutor, RayExecutor
from keel.distributed.local_head import LocalRayHead
from keel.memory.ingest import DocumentIngestor
from keel.memory.sqlite_store import SQLiteVectorStore
from keel.memory.testing import HashingEmbedder


def identity(x: int) -> int:
    return x


def embedder() -> HashingEmbedder:
    return HashingEmbedder(dimension=128)


async def per_item_ms(executor: Executor, items: int) -> float:
    await executor.map(identity, list(range(8)))  # warm up (workers, connection)
    started = time.perf_counter()
    results = await executor.map(identity, list(range(items)))
    assert all(r.ok for r in results)
    return (time.perf_counter() - started) * 1000 / items


async def ingest_s(root: Path, db: Path, executor: Executor | None) -> tuple[float, int]:
    store = SQLiteVectorStore(db, 128)
    try:
        ingestor = DocumentIngestor(
            store,
            embedder(),
            db,
            max_chars=500,
            overlap=50,
            executor=executor,
            worker_embedder=embedder,
        )
        started = time.perf_counter()
        report = await ingestor.ingest(root, "bench")
        return time.perf_counter() - started, report.chunks_total
    finally:
        await store.close()


async def main(files: int, items: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "docs"
        root.mkdir()
        for i in range(files):
            body = "\n\n".join(f"Paragraph {j} of file {i} about orbits." * 8 for j in range(20))
            (root / f"doc{i}.md").write_text(f"# Doc {i}\n\n{body}", encoding="utf-8")
        started = time.perf_counter()
        with LocalRayHead(num_cpus=2) as head:
            up = time.perf_counter() - started
            ray.init(address=head.address, _node_ip_address="127.0.0.1", log_to_driver=False)
            try:
                local = await per_item_ms(LocalExecutor(), items)
                remote = await per_item_ms(RayExecutor(head.address), items)
                plain, chunks = await ingest_s(root, Path(tmp) / "a.db", None)
                on_ray, _ = await ingest_s(root, Path(tmp) / "b.db", RayExecutor(head.address))
            finally:
                ray.shutdown()
    print(f"ray head start-up: {up:.1f} s")
    print(f"map overhead per item ({items} trivial items): local {local:.3f} ms, ", end="")
    print(f"ray {remote:.2f} ms")
    print(f"ingest {files} files / {chunks} chunks: in-process {plain:.2f} s, ray {on_ray:.2f} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--items", type=int, default=500)
    args = parser.parse_args()
    asyncio.run(main(args.files, args.items))
