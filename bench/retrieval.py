"""Retrieval quality of keyword (BM25), vector and hybrid (RRF) retrieval, with real embeddings.

1. The Cranfield collection (1,400 aeronautics abstracts, 225 queries, graded judgements that
   nobody on this project wrote): nDCG@10, recall@100 and MRR. Documents are chunked like any
   ingested text; a document ranks where its best chunk ranks.
2. Keel's demo corpus (the Solar System guide) with the labelled questions in
   bench/retrieval_questions.json: hit rate@5 and MRR of the right section.

Embeddings are cached by content hash in bench/.cache/embeddings.db (gitignored), so a second run
embeds nothing. Run: .venv/bin/python bench/retrieval.py [--cranfield DIR] [--threads N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from keel.memory.base import Hit, VectorRecord
from keel.memory.cache import CachedEmbedder
from keel.memory.chunking import chunk_document, text_document
from keel.memory.ingest import DocumentIngestor
from keel.memory.onnx_embedder import MiniLMEmbedder
from keel.memory.retrieval import RetrievalMode, Retriever
from keel.memory.sqlite_store import SQLiteVectorStore

HERE = Path(__file__).parent
MODES: tuple[RetrievalMode, ...] = ("keyword", "vector", "hybrid")
DEMO_CORPUS = HERE.parent / "src" / "keel" / "demo" / "corpus"


def read_fields(path: Path) -> list[dict[str, str]]:
    """Records of a Cranfield file: ``.I`` starts one, ``.X`` lines start field X."""
    records: list[dict[str, str]] = []
    field = ""
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith(".I"):
            records.append({"I": line[2:].strip()})
            field = ""
        elif re.fullmatch(r"\.[A-Z]", line.strip()):
            field = line.strip()[1]
            records[-1][field] = ""
        elif field:
            records[-1][field] += line + "\n"
    return records


def load_cranfield(root: Path) -> tuple[dict[str, str], list[str], dict[int, dict[str, int]]]:
    """Documents by id, queries in file order (query n is position n, not its .I number), and
    graded gains (5 - grade) per query position; the -1 lines are not judgements."""
    docs = {
        r["I"]: f"{r.get('T', '').strip()}\n\n{r.get('W', '').strip()}"
        for r in read_fields(root / "cran.all.1400")
    }
    queries = [" ".join(r.get("W", "").split()) for r in read_fields(root / "cran.qry")]
    judged: dict[int, dict[str, int]] = {}
    for line in (root / "cranqrel").read_text().splitlines():
        parts = line.split()
        if len(parts) != 3 or int(parts[2]) < 1:
            continue
        judged.setdefault(int(parts[0]), {})[parts[1]] = 5 - int(parts[2])
    return docs, queries, judged


def ndcg(ranked: Sequence[str], gains: dict[str, int], k: int) -> float:
    dcg = sum(gains.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
    ideal = sorted(gains.values(), reverse=True)[:k]
    best = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / best if best else 0.0


def reciprocal_rank(ranked: Sequence[str], relevant: set[str]) -> float:
    return next((1.0 / (i + 1) for i, d in enumerate(ranked) if d in relevant), 0.0)


def documents_in_order(hits: list[Hit]) -> list[str]:
    """Document ids in the order of their best chunk."""
    return list(dict.fromkeys(str(h.metadata["doc"]) for h in hits))


async def cranfield(root: Path, embedder: CachedEmbedder, workdir: Path) -> None:
    docs, queries, judged = load_cranfield(root)
    inner = embedder.inner
    assert isinstance(inner, MiniLMEmbedder)
    chunks = [
        (doc_id, i, chunk.text)
        for doc_id, text in docs.items()
        for i, chunk in enumerate(
            chunk_document(
                text_document(text),
                max_chars=1000,
                overlap=100,
                count_tokens=inner.count_tokens,
                max_tokens=inner.max_input_tokens,
            )
        )
    ]
    started = time.perf_counter()
    vectors = await embedder.embed([text for _, _, text in chunks])
    print(
        f"Cranfield: {len(docs)} documents, {len(chunks)} chunks, {len(queries)} queries, "
        f"{sum(map(len, judged.values()))} judgements; embedded {embedder.misses} chunks "
        f"({embedder.hits} from cache) in {time.perf_counter() - started:.1f} s"
    )
    store = SQLiteVectorStore(workdir / "cranfield.db", embedder.dimension)
    await store.upsert(
        "cranfield",
        [
            VectorRecord(id=f"{d}#{i}", vector=v, text=t, metadata={"doc": d})
            for (d, i, t), v in zip(chunks, vectors, strict=True)
        ],
    )
    print(f"{'mode':<8} {'nDCG@10':>8} {'recall@100':>11} {'MRR':>6} {'ms/query':>9}")
    for mode in MODES:
        retriever = Retriever(store, embedder, mode=mode, candidates=400)
        scores: list[tuple[float, float, float]] = []
        started = time.perf_counter()
        for position, query in enumerate(queries, start=1):
            gains = judged.get(position, {})
            if not gains:
                continue
            ranked = documents_in_order(await retriever.retrieve(query, "cranfield", k=400))
            relevant = set(gains)
            scores.append(
                (
                    ndcg(ranked, gains, 10),
                    len(relevant & set(ranked[:100])) / len(relevant),
                    reciprocal_rank(ranked, relevant),
                )
            )
        elapsed = (time.perf_counter() - started) / len(scores) * 1000
        means = [sum(s[i] for s in scores) / len(scores) for i in range(3)]
        print(f"{mode:<8} {means[0]:8.4f} {means[1]:11.4f} {means[2]:6.4f} {elapsed:9.1f}")
    await store.close()


async def demo_questions(embedder: CachedEmbedder, workdir: Path) -> None:
    questions = json.loads((HERE / "retrieval_questions.json").read_text())
    store = SQLiteVectorStore(workdir / "demo.db", embedder.dimension)
    ingestor = DocumentIngestor(store, embedder, workdir / "demo.db", max_chars=1000, overlap=100)
    report = await ingestor.ingest(DEMO_CORPUS, "demo")
    print(
        f"\nDemo corpus: {report.chunks_total} chunks from {report.files_added} files, "
        f"{len(questions)} labelled questions (right section = right file and heading)"
    )
    print(f"{'mode':<8} {'hit@5':>6} {'MRR':>6}")
    for mode in MODES:
        retriever = Retriever(store, embedder, mode=mode)
        hits5, rr = 0, 0.0
        for q in questions:
            hits = await retriever.retrieve(q["question"], "demo", k=10)
            right = [
                h.metadata["source"] == q["source"]
                and str(h.metadata["heading"]).endswith(q["heading"])
                for h in hits
            ]
            hits5 += any(right[:5])
            rr += next((1.0 / (i + 1) for i, ok in enumerate(right) if ok), 0.0)
        print(f"{mode:<8} {hits5 / len(questions):6.3f} {rr / len(questions):6.3f}")
    await store.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--cranfield", type=Path, default=HERE.parent.parent / "shared" / "data" / "cranfield"
    )
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    cache = HERE / ".cache" / "embeddings.db"
    embedder = CachedEmbedder(MiniLMEmbedder(threads=args.threads, batch_size=32), cache)
    print(f"embedder: {embedder.name} (cache: {cache})")
    with tempfile.TemporaryDirectory() as workdir:
        await cranfield(args.cranfield, embedder, Path(workdir))
        await demo_questions(embedder, Path(workdir))
    embedder.close()


if __name__ == "__main__":
    asyncio.run(main())
