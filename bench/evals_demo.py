"""The demo agent's eval suite on the embedded model: pass rates per case, and the time it takes.

Run: .venv/bin/python bench/evals_demo.py [--runs 5] [--threads 1] [--temperature 0.7]
Uses a fresh temporary data directory, the shipped suite (src/keel/evals/suites/demo.yaml), the
shipped demo corpus and the default embedded stack (SmolLM2-135M-Instruct via llama.cpp,
all-MiniLM-L6-v2 int8). It prints each case's passes, Wilson interval, pass^3 and which checks
failed how often: the figures the suite's thresholds (and the CI subset's) were set from.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections import Counter

from keel.config import load_settings
from keel.evals import load_dataset, run_dataset, subject_for
from keel.stack import open_model


async def run(runs: int, threads: int, temperature: float | None, seed: int) -> None:
    dataset = load_dataset("demo")
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(
            {"data_dir": tmp, "llm": {"threads": threads}, "embeddings": {"threads": threads}}
        )
        started = time.perf_counter()
        model = open_model(settings)
        opened = await subject_for(dataset, settings=settings)
        setup_s = time.perf_counter() - started
        try:
            report = await run_dataset(
                dataset, model, opened.subject, runs=runs, temperature=temperature, seed=seed
            )
        finally:
            await opened.close()
            await model.aclose()
    print(
        f"demo suite: {len(report.cases)} cases x {runs} runs, {model.name}, threads={threads}, "
        f"temperature={report.temperature}, seed={seed}"
    )
    print(f"setup (model load, ingest of the corpus): {setup_s:.1f} s")
    print(
        f"runs: {report.duration_s:.1f} s, {report.duration_s / report.runs:.2f} s per run "
        "(the first run of a case pays for the prompt, later runs reuse llama.cpp's cache)"
    )
    print(
        f"{'case':<22} {'passes':>7} {'threshold':>9} {'95% CI':>13} {'pass^3':>7}  failed checks"
    )
    for case in report.cases:
        failed = Counter(f.split(":")[0] for r in case.records for f in r.failures)
        checks = ", ".join(f"{k} x{v}" for k, v in sorted(failed.items())) or "-"
        print(
            f"{case.id:<22} {case.passes:>3}/{case.runs:<3} {case.threshold:>9.2f} "
            f"{case.ci_low:>6.2f}-{case.ci_high:<6.2f} {case.pass_k:>7.2f}  {checks}"
            f"{'' if case.passed else '  FAIL'}"
        )
    print(report.summary())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5, help="runs per case")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for the model")
    parser.add_argument(
        "--temperature", type=float, default=None, help="default: the suite's temperature"
    )
    parser.add_argument("--seed", type=int, default=0, help="run i samples with seed SEED+i")
    args = parser.parse_args()
    asyncio.run(run(args.runs, args.threads, args.temperature, args.seed))


if __name__ == "__main__":
    main()
