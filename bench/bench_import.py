"""How long `import keel` takes, and which heavy modules it loads (there should be none).

Run: .venv/bin/python bench/bench_import.py [--runs 20]
Each run is a fresh interpreter; the figure is the median wall time of `python -c "import keel"`
minus the median of `python -c "pass"` (interpreter start-up), plus the raw figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

HEAVY = ("numpy", "xllamacpp", "onnxruntime", "faiss", "tokenizers", "torch")


def wall(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    for module in ("keel", "keel.llm", "keel.graph", "keel.memory", "keel.observe", "keel.cli"):
        bare = statistics.median(wall("pass") for _ in range(args.runs))
        full = statistics.median(wall(f"import {module}") for _ in range(args.runs))
        listing = subprocess.check_output(
            [
                sys.executable,
                "-c",
                f"import sys, json, {module}; print(json.dumps(list(sys.modules)))",
            ],
            text=True,
        )
        heavy = sorted({m.split(".")[0] for m in json.loads(listing)} & set(HEAVY))
        print(
            f"import {module:<13} {full * 1000:6.1f} ms wall ({(full - bare) * 1000:6.1f} ms over "
            f"bare interpreter {bare * 1000:.1f} ms); heavy modules loaded: {heavy or 'none'}"
        )


if __name__ == "__main__":
    main()
