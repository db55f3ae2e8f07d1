"""Embeddings per second of the local MiniLM embedder on 500 short sentences (and, for context,
on the demo corpus cut into 1000-character chunks).

Run: .venv/bin/python bench/bench_embeddings.py [--threads 2] [--repeat 3]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from keel.memory.chunking import chunk_markdown
from keel.memory.onnx_embedder import MiniLMEmbedder

SUBJECTS = ["The cat", "A rover", "Our team", "The comet", "My neighbour", "The old ship", "A bee"]
VERBS = ["crossed", "photographed", "repaired", "ignored", "followed", "measured", "painted"]
OBJECTS = ["the bridge", "a red planet", "the garden wall", "an icy moon", "the river", "a map"]


def sentences(n: int) -> list[str]:
    """``n`` distinct short sentences (about 8-12 tokens each)."""
    out = []
    for i in range(n):
        s, v, o = SUBJECTS[i % 7], VERBS[(i // 7) % 7], OBJECTS[(i // 49) % 6]
        out.append(f"{s} {v} {o} on day {i}.")
    return out


def rate(embedder: MiniLMEmbedder, texts: list[str], repeat: int) -> float:
    """Best embeddings per second over ``repeat`` runs (the least disturbed by other load)."""
    best = 0.0
    for _ in range(repeat):
        start = time.perf_counter()
        vectors = embedder.embed_sync(texts)
        elapsed = time.perf_counter() - start
        assert len(vectors) == len(texts)
        best = max(best, len(texts) / elapsed)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    embedder = MiniLMEmbedder(threads=args.threads, batch_size=args.batch_size)
    embedder.embed_sync(["warm-up"])  # loads the model and tokenizer
    short = rate(embedder, sentences(500), args.repeat)
    print(
        f"MiniLM int8, {args.threads} threads, batch {args.batch_size}: "
        f"{short:.0f} embeddings/s on 500 short sentences"
    )
    corpus = Path(__file__).parents[1] / "src" / "keel" / "demo" / "corpus"
    chunks = [
        c.text
        for path in sorted(corpus.glob("*.md"))
        for c in chunk_markdown(path.read_text(encoding="utf-8"), max_chars=1000, overlap=100)
    ]
    long = rate(embedder, chunks, 1)
    print(f"  for context: {long:.1f} chunks/s on {len(chunks)} demo-corpus chunks (<=1000 chars)")


if __name__ == "__main__":
    main()
