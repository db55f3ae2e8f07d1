"""Throughput of the embedded model: prompt tokens/s and generated tokens/s, plus peak RSS.

Run: .venv/bin/python bench/bench_llm.py [--threads 2] [--runs 3]
Each run uses a different prompt, so llama.cpp's prompt cache does not hide prompt processing.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import time
from pathlib import Path

from keel.llm import ModelSettings, UserMessage
from keel.llm.local import LlamaCppModel

TEXT = (Path(__file__).parents[1] / "src" / "keel" / "demo" / "corpus" / "03-venus.md").read_text()


async def run(threads: int, runs: int) -> None:
    model = LlamaCppModel(threads=threads, context_size=4096)
    prompt_rates, gen_rates = [], []
    for i in range(runs):
        long_prompt = f"Run {i}. Summarise:\n" + TEXT[i * 50 : i * 50 + 4000]
        started = time.perf_counter()
        response = await model.request(
            [UserMessage(content=long_prompt)], settings=ModelSettings(max_tokens=1)
        )
        prompt_rates.append(response.usage.input_tokens / (time.perf_counter() - started))
        started = time.perf_counter()
        response = await model.request(
            [UserMessage(content=f"Story {i}: write a long story about a lighthouse keeper.")],
            settings=ModelSettings(max_tokens=128, temperature=0.7, seed=i),
        )
        gen_rates.append(response.usage.output_tokens / (time.perf_counter() - started))
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{model.name}, {threads} threads, {runs} runs")
    print(f"prompt processing: median {statistics.median(prompt_rates):.0f} tokens/s")
    print(f"generation (incl. a short prompt): median {statistics.median(gen_rates):.0f} tokens/s")
    print(f"peak RSS of this process: {rss_mb:.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(run(args.threads, args.runs))


if __name__ == "__main__":
    main()
