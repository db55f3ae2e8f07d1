"""The main job, timed stage by stage: model load, ingest (cold and warm), retrieval, answer.

Run: .venv/bin/python bench/bench_demo.py [--runs 3]
Uses a fresh temporary data directory, the shipped demo corpus and the default embedded stack
(SmolLM2-135M-Instruct via llama.cpp, all-MiniLM-L6-v2 int8 via onnxruntime, SQLite + usearch).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from keel.cli import DEMO_QUESTION
from keel.config import load_settings
from keel.stack import open_memory, open_model

CORPUS = Path(__file__).parents[1] / "src" / "keel" / "demo" / "corpus"


async def run(runs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings({"data_dir": tmp})
        started = time.perf_counter()
        model = open_model(settings)
        load_s = time.perf_counter() - started
        memory = open_memory(settings)
        started = time.perf_counter()
        cold = await memory.ingest(CORPUS)
        cold_s = time.perf_counter() - started
        started = time.perf_counter()
        warm = await memory.ingest(CORPUS)
        warm_s = time.perf_counter() - started
        qa = memory.question_answerer(model, CORPUS)
        answer_s, tokens_in, tokens_out = [], 0, 0
        for _ in range(runs):
            started = time.perf_counter()
            answer = await qa.ask(DEMO_QUESTION)
            answer_s.append(time.perf_counter() - started)
            tokens_in, tokens_out = answer.usage.input_tokens, answer.usage.output_tokens
        await memory.close()
        await model.aclose()
    print(f"model load (SmolLM2-135M Q4_1, llama.cpp):  {load_s:6.2f} s")
    print(
        f"ingest, cold ({cold.files_added} files, {cold.chunks_embedded} chunks):   {cold_s:6.2f} s"
        f"  ({cold.chunks_embedded / cold_s:.0f} chunks/s)"
    )
    print(f"ingest, warm (nothing changed, {warm.chunks_embedded} embedded): {warm_s:6.2f} s")
    print(
        f"answer (retrieve + 1 model call), {runs} runs: "
        f"median {statistics.median(answer_s):.2f} s, first {answer_s[0]:.2f} s; "
        f"tokens in {tokens_in}, out {tokens_out}"
    )
    print(f"answer: {answer.answer}")
    print(f"citations: {[c.label for c in answer.citations]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3, help="answers to time (first is cold)")
    asyncio.run(run(parser.parse_args().runs))


if __name__ == "__main__":
    main()
