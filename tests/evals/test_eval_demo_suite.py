"""The demo agent's eval suite on the real embedded model, run as a user would: ``keel eval``.

A CI-sized subset (5 cases x 3 runs, one thread: about a minute of CPU) of the shipped suite,
with the suite's own thresholds (set from measured pass rates of SmolLM2-135M; see
bench/evals_demo.py). Every run is recorded, and one recorded run is replayed offline and must
give the identical answer.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

CI_CASES = [  # cases that measured 5/5 on temperature 0.3 (their threshold is the default 0.2)
    "sun-fusion",
    "mars-moons",
    "saturn-rings",
    "saturn-titan",
    "apollo-moon-landing",
]


def keel(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "KEEL_DATA_DIR": str(data_dir),
        "KEEL_LLM__THREADS": "1",
        "KEEL_EMBEDDINGS__THREADS": "1",
        "COLUMNS": "200",
    }
    env.pop("KEEL_CONFIG", None)
    return subprocess.run(
        [sys.executable, "-m", "keel.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        cwd=data_dir,
    )


def test_demo_suite_subset_passes_on_the_embedded_model(tmp_path: Path) -> None:
    report, page = tmp_path / "report.json", tmp_path / "report.html"
    selected = [arg for case in CI_CASES for arg in ("--case", case)]
    result = keel(
        "eval", "demo", *selected, "--runs", "3", "--record", "--quiet",
        "--json", str(report), "--html", str(page), data_dir=tmp_path,
    )  # fmt: skip
    assert "Traceback" not in result.stderr
    data = json.loads(report.read_text())
    rates = {c["id"]: f"{c['passes']}/{c['runs']}" for c in data["cases"]}
    assert result.returncode == 0, (rates, result.stdout[-3000:])
    assert data["model"] == "SmolLM2-135M-Instruct.Q4_1"
    assert [c["id"] for c in data["cases"]] == CI_CASES
    assert all(c["runs"] == 3 and c["passed"] for c in data["cases"]), rates
    assert "sun-fusion" in result.stdout and "pass" in result.stdout
    assert "<td><b>saturn-titan</b>" in page.read_text()

    # Replay one recorded run offline: no model is loaded, the answer is identical.
    run = data["cases"][0]["records"][0]
    replayed = keel("replay", run["run_id"], "--json", data_dir=tmp_path)
    assert replayed.returncode == 0, replayed.stderr
    assert "identical to the recorded output" in replayed.stderr
    assert json.loads(replayed.stdout)["answer"] == run["output"]
