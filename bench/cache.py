"""Response cache benchmark (issue 8): lookup latency at 100,000 entries, and hit rate, cost
saved and wrong hits on a workload with repeats.

1. Lookup latency. 100,000 entries in one namespace and one semantic scope (the worst case: every
   entry is a candidate) in the embedded backend (SQLite + usearch) and in Redis (a real
   redis-server started here). Vectors: the cached MiniLM embeddings of man-page chunks
   (bench/.cache/manpages-50000.npy, made by bench/ann_corpus.py) plus as many normalised
   midpoints of random pairs of them; without that file, clustered synthetic vectors. Exact
   lookups fetch a random stored key; semantic lookups search with a stored vector plus noise
   (a near-duplicate, cosine ~0.95) and with a random stored vector mixed 50/50 with another
   (no entry above the threshold). Embedding time is reported apart: a semantic lookup also
   embeds the message (MiniLM, ~3-10 ms on this CPU).
2. Workload. 2,000 requests drawn from the shipped labelled set (keel/cache/data): each pair
   group gives two meanings, the question (two wordings: the question and its paraphrase) and
   the hard non-paraphrase (one wording). Meanings are drawn with a Zipf law (s=1.1) over a
   random ranking, wordings uniformly. The model is a test double whose answer names the
   meaning, so a hit that returns another meaning's answer is a wrong hit. Cost saved is at
   gpt-4o-mini list prices (OpenAI, July 2024: $0.15 per million input tokens, $0.60 per
   million output tokens), for 350 prompt tokens and 250 answer tokens per call.

Run: .venv/bin/python bench/cache.py [--entries 100000] [--requests 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from keel.cache import CachedModel, SQLiteCacheBackend
from keel.cache.base import CacheBackend, CacheEntry, SemanticItem
from keel.cache.calibrate import load_pairs
from keel.cache.model import DEFAULT_THRESHOLD
from keel.llm import (
    AssistantMessage,
    ModelSettings,
    Price,
    PriceTable,
    Response,
    SystemMessage,
    TextPart,
    Usage,
    UserMessage,
)
from keel.llm.testing import FunctionModel, ModelCall

HERE = Path(__file__).parent
DIM = 384
PROMPT_TOKENS, ANSWER_TOKENS = 350, 250
PRICES = PriceTable({"gpt-4o-mini": Price(input=0.15, output=0.60)})


def vectors(n: int, seed: int = 0) -> tuple[np.ndarray, str]:
    rng = np.random.default_rng(seed)
    path = HERE / ".cache" / "manpages-50000.npy"
    if path.is_file():
        real = np.load(path).astype(np.float32)
        extra = max(0, n - len(real))
        a, b = rng.integers(0, len(real), extra), rng.integers(0, len(real), extra)
        mixed = real[a] + real[b]
        matrix = np.concatenate([real, mixed])[:n]
        source = f"{min(n, len(real))} MiniLM man-page embeddings + {extra} midpoints"
    else:
        centres = rng.standard_normal((1000, DIM)).astype(np.float32)
        matrix = centres[rng.integers(0, 1000, n)] + 0.3 * rng.standard_normal((n, DIM)).astype(
            np.float32
        )
        source = f"{n} clustered synthetic vectors (1,000 centres)"
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix, source


def entry(i: int) -> CacheEntry:
    response = Response(
        message=AssistantMessage(parts=(TextPart(text=f"cached answer number {i}"),)),
        usage=Usage(input_tokens=PROMPT_TOKENS, output_tokens=ANSWER_TOKENS, requests=1),
        model_name="gpt-4o-mini",
    )
    return CacheEntry(key=f"key-{i:08d}", response=response, text=f"question {i}")


def percentiles(samples: list[float]) -> str:
    ms = np.array(samples) * 1000
    return f"p50 {np.percentile(ms, 50):6.3f} ms  p99 {np.percentile(ms, 99):6.3f} ms"


async def measure(backend: CacheBackend, matrix: np.ndarray, label: str, lookups: int) -> None:
    n = len(matrix)
    rng = np.random.default_rng(1)
    start = time.perf_counter()
    for lo in range(0, n, 5000):
        items = [
            (entry(i), SemanticItem(scope="scope", vector=matrix[i].tolist()))
            for i in range(lo, min(n, lo + 5000))
        ]
        await backend.put_many("bench", items)
    fill = time.perf_counter() - start
    start = time.perf_counter()
    await backend.nearest("bench", "scope", matrix[0].tolist(), 0.99)  # builds the index
    build = time.perf_counter() - start
    print(f"{label}: filled {n} entries in {fill:.1f} s, index built in {build:.1f} s")

    exact = []
    for i in rng.integers(0, n, lookups):
        t = time.perf_counter()
        found = await backend.get("bench", f"key-{i:08d}")
        exact.append(time.perf_counter() - t)
        assert found is not None
    print(f"  exact hit          {percentiles(exact)}")
    missing = []
    for i in range(lookups):
        t = time.perf_counter()
        await backend.get("bench", f"absent-{i}")
        missing.append(time.perf_counter() - t)
    print(f"  exact miss         {percentiles(missing)}")

    # Queries and their exact nearest similarity first, in one product: a big numpy product
    # between timed lookups would leave BLAS threads spinning on the cores Redis needs.
    picks = rng.integers(0, n, lookups)
    queries = matrix[picks] + 0.018 * rng.standard_normal((lookups, DIM)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    best = (queries @ matrix.T).max(axis=1)
    near, found_right = [], 0
    for query, top in zip(queries, best, strict=True):
        t = time.perf_counter()
        match = await backend.nearest("bench", "scope", query.tolist(), 0.9)
        near.append(time.perf_counter() - t)
        # Man pages repeat themselves: an entry exactly as similar as the nearest counts too.
        found_right += match is not None and match.similarity >= top - 1e-4
    print(
        f"  semantic hit       {percentiles(near)}  "
        f"(an exact nearest entry returned: {found_right / lookups:.1%})"
    )
    far = []
    mixes = matrix[rng.integers(0, n, lookups)] + matrix[rng.integers(0, n, lookups)]
    mixes /= np.linalg.norm(mixes, axis=1, keepdims=True)
    for query in mixes:
        t = time.perf_counter()
        await backend.nearest("bench", "scope", query.tolist(), DEFAULT_THRESHOLD)
        far.append(time.perf_counter() - t)
    print(f"  semantic miss      {percentiles(far)}")


def start_redis() -> tuple[subprocess.Popen[bytes], int] | None:
    binary = shutil.which("redis-server")
    if binary is None:
        print("redis-server not installed: Redis figures skipped")
        return None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process, port
        except OSError:
            time.sleep(0.05)
    process.terminate()
    raise SystemExit("redis-server did not start")


async def workload(requests: int, thresholds: list[float | None]) -> None:
    from keel.memory.onnx_embedder import MiniLMEmbedder

    pairs = load_pairs().pairs
    forms: dict[str, list[str]] = {}
    for p in pairs:
        if p.paraphrase:
            forms.setdefault(f"{p.group}:q", []).extend([p.a, p.b])
        else:
            forms[f"{p.group}:n"] = [p.b]
    meanings = sorted(forms)
    rng = random.Random(7)
    rng.shuffle(meanings)
    weights = [1 / (rank + 1) ** 1.1 for rank in range(len(meanings))]
    drawn = rng.choices(meanings, weights, k=requests)
    stream = [(m, rng.choice(forms[m])) for m in drawn]
    distinct_calls = len(set(text for _, text in stream))
    print(
        f"\nworkload: {requests} requests over {len(meanings)} meanings "
        f"({len(set(drawn))} drawn), {distinct_calls} distinct wordings; Zipf s=1.1"
    )
    embedder = MiniLMEmbedder(threads=2)
    await embedder.embed(["warm up"])
    system = SystemMessage(content="You are a helpful assistant. Answer in one paragraph.")
    greedy = ModelSettings(temperature=0.0, max_tokens=300)
    full_cost = requests * (PROMPT_TOKENS * 0.15 + ANSWER_TOKENS * 0.60) / 1e6
    print(f"cost without a cache: ${full_cost:.4f} (gpt-4o-mini list prices)")
    print("threshold  exact hits  semantic hits  hit rate  wrong hits  saved USD  saved %")
    meaning_of = {text: m for m, text in stream}
    for threshold in thresholds:

        def answer(call: ModelCall) -> Response:
            return Response(
                message=AssistantMessage(
                    parts=(TextPart(text=f"meaning {meaning_of[call.last_user_text]}"),)
                ),
                usage=Usage(input_tokens=PROMPT_TOKENS, output_tokens=ANSWER_TOKENS, requests=1),
                model_name="gpt-4o-mini",
            )

        with tempfile.TemporaryDirectory() as tmp:
            backend = SQLiteCacheBackend(Path(tmp) / "cache.db")
            model = CachedModel(
                FunctionModel(answer, name="gpt-4o-mini"),
                backend,
                embedder=None if threshold is None else embedder,
                threshold=threshold or DEFAULT_THRESHOLD,
                prices=PRICES,
            )
            wrong = 0
            for meaning, text in stream:
                response = await model.request([system, UserMessage(content=text)], settings=greedy)
                wrong += response.message.text != f"meaning {meaning}"
            await backend.close()
        c = model.counters
        label = "exact only" if threshold is None else f"{threshold:.3f}"
        print(
            f"{label:>10} {c.exact_hits:11d} {c.semantic_hits:14d} {c.hits / requests:9.1%} "
            f"{wrong:11d} {c.saved_usd:10.4f} {c.saved_usd / full_cost:8.1%}"
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--lookups", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-workload", action="store_true")
    args = parser.parse_args()
    if not args.skip_latency:
        matrix, source = vectors(args.entries)
        print(f"vectors: {source}")
        with tempfile.TemporaryDirectory() as tmp:
            backend = SQLiteCacheBackend(Path(tmp) / "cache.db")
            await measure(backend, matrix, "embedded (SQLite + usearch)", args.lookups)
            await backend.close()
        started = start_redis()
        if started is not None:
            import redis.asyncio

            from keel.cache.redis_backend import RedisCacheBackend

            process, port = started
            try:
                client = redis.asyncio.Redis(port=port)
                redis_backend = RedisCacheBackend(
                    client, prefix=f"bench:{uuid.uuid4().hex[:6]}:", owns_client=True
                )
                await measure(redis_backend, matrix, "Redis 7 (local server)", args.lookups)
                await redis_backend.close()
            finally:
                process.terminate()
                process.wait(10)
    if not args.skip_workload:
        await workload(args.requests, [None, DEFAULT_THRESHOLD, 0.95, 0.9])


if __name__ == "__main__":
    asyncio.run(main())
