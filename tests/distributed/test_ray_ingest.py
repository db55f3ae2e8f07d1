"""Batch ingestion on Ray: loading, chunking and embedding run as tasks, the driver writes.

The result must be what in-process ingestion gives: same chunks, same vectors, same per-file
failures, and the same incremental behaviour on the next run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import RayHead

from keel.memory.ingest import DocumentIngestor, IngestReport
from keel.memory.sqlite_store import SQLiteVectorStore
from keel.memory.testing import HashingEmbedder

NS = "docs"


def corpus(root: Path) -> Path:
    root.mkdir()
    for i in range(7):
        text = f"# Moon {i}\n\n" + " ".join(f"Moon {i} fact {j} about orbits." for j in range(30))
        (root / f"moon{i}.md").write_text(text, encoding="utf-8")
    (root / "broken.pdf").write_bytes(b"this is not a pdf")
    return root


def small_embedder() -> HashingEmbedder:
    return HashingEmbedder(dimension=64)


async def ingest(db: Path, docs: Path, executor: object = None) -> tuple[IngestReport, list]:
    store = SQLiteVectorStore(db, 64)
    try:
        ingestor = DocumentIngestor(
            store,
            small_embedder(),
            db,
            max_chars=200,
            overlap=20,
            executor=executor,  # type: ignore[arg-type]
            worker_embedder=small_embedder,
            batch_size=3,
            embed_batch_size=16,
        )
        report = await ingestor.ingest(docs, NS)
        probe = (await small_embedder().embed(["moon orbits"]))[0]
        hits = await store.query(NS, probe, 500)
        return report, sorted((h.id, h.text, round(h.score, 6)) for h in hits)
    finally:
        await store.close()


async def test_ray_ingest_matches_local_ingest_and_stays_incremental(
    ray_head: RayHead, tmp_path: Path
) -> None:
    from keel.distributed import RayExecutor

    docs = corpus(tmp_path / "docs")
    local_report, local_hits = await ingest(tmp_path / "local.db", docs)
    executor = RayExecutor(ray_head.address, max_in_flight=4)
    report, hits = await ingest(tmp_path / "ray.db", docs, executor)

    assert hits == local_hits and len(hits) == report.chunks_total > 7
    assert report.model_dump() == local_report.model_dump()
    assert report.files_added == 7 and report.chunks_embedded == report.chunks_total
    assert [f.source for f in report.failed] == ["broken.pdf"]

    (docs / "moon2.md").write_text("# Moon 2\n\nRewritten: one short line.", encoding="utf-8")
    again, hits = await ingest(tmp_path / "ray.db", docs, executor)
    assert (again.files_unchanged, again.files_updated, again.files_added) == (6, 1, 0)
    assert again.chunks_embedded == 1 and again.chunks_cached == 0
    assert next(h for h in hits if h[0].startswith("moon2.md#"))[1] == "Rewritten: one short line."


async def test_executor_ingest_on_the_local_executor_matches_in_process(tmp_path: Path) -> None:
    from keel.distributed import LocalExecutor

    docs = corpus(tmp_path / "docs")
    plain_report, plain_hits = await ingest(tmp_path / "plain.db", docs)
    report, hits = await ingest(tmp_path / "pooled.db", docs, LocalExecutor(concurrency=2))
    assert (report.model_dump(), hits) == (plain_report.model_dump(), plain_hits)


@pytest.mark.slow
def test_keel_ingest_executor_ray_over_ray_client(ray_head: RayHead, tmp_path: Path) -> None:
    """The CLI path, in a fresh process, through ``ray://`` and the real MiniLM embedder."""
    pytest.importorskip("onnxruntime", reason="needs the embeddings extra")
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(3):
        (docs / f"note{i}.md").write_text(f"# Note {i}\n\nThe note number {i}.", "utf-8")
    (docs / "bad.pdf").write_bytes(b"not a pdf")
    env = {
        **ray_head.env,
        "KEEL_DATA_DIR": str(tmp_path / "data"),
        "KEEL_DISTRIBUTED__RAY_ADDRESS": ray_head.client_address,
        "KEEL_EMBEDDINGS__THREADS": "1",
    }
    command = [
        str(Path(sys.executable).with_name("keel")),
        "ingest",
        str(docs),
        "--executor",
        "ray",
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["files_added"] == 3 and report["chunks_embedded"] == report["chunks_total"]
    assert [f["source"] for f in report["failed"]] == ["bad.pdf"]
    assert "skipped bad.pdf" in done.stderr
