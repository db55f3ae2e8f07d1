"""Batch evaluation on Ray: every (case, run) is a Ray task that builds its own target; the report
is computed on the driver and must equal the in-process run's."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import RayHead
from typer.testing import CliRunner

from keel.distributed import LocalExecutor
from keel.distributed.evals import EvalWork
from keel.evals.dataset import load_dataset
from keel.evals.report import EvalReport
from keel.evals.runner import run_dataset, subject_for

DATASET = """
name: seeded
target:
  kind: function
  function: ray_eval_helpers:answer
  model: ray_eval_helpers:seeded_model
defaults:
  runs: 6
  temperature: 0.7
  threshold: 0.5
cases:
  - id: agree
    input: Do you agree?
    checks: [{type: contains, value: "yes"}]
  - id: refuse
    input: Do you refuse?
    checks: [{type: contains, value: "no"}]
  - id: broken
    input: Please explode.
    runs: 2
    checks: [{type: contains, value: "yes"}]
"""


def dataset_file(tmp_path: Path, text: str = DATASET) -> Path:
    path = tmp_path / "seeded.yaml"
    path.write_text(text, encoding="utf-8")
    return path


async def local_report(path: Path) -> EvalReport:
    from ray_eval_helpers import seeded_model

    dataset = load_dataset(path)
    opened = await subject_for(dataset)
    return await run_dataset(dataset, seeded_model(), opened.subject, seed=5)


PID = re.compile(r"pid=\d+")


def summary(report: EvalReport) -> list[Any]:
    """Everything of the report but timings and outputs (which name the process)."""
    return [
        (report.model, report.temperature),
        *(
            (
                c.id,
                c.runs,
                c.passes,
                c.pass_rate,
                c.ci_low,
                c.ci_high,
                c.pass_k,
                c.passed,
                [(r.passed, [PID.sub("pid=?", f) for f in r.failures], r.error) for r in c.records],
            )
            for c in report.cases
        ),
    ]


def pids(report: EvalReport) -> set[str]:
    return {r.output.rsplit("pid=", 1)[1] for c in report.cases for r in c.records if r.output}


async def test_ray_eval_gives_the_local_report_from_other_processes(
    ray_head: RayHead, tmp_path: Path
) -> None:
    from keel.distributed import RayExecutor

    path = dataset_file(tmp_path)
    expected = await local_report(path)
    seen: list[tuple[int, int]] = []
    async with RayExecutor(ray_head.address, max_in_flight=4) as executor:
        report = await run_dataset(
            load_dataset(path),
            None,
            None,
            seed=5,
            executor=executor,
            work=EvalWork(dataset=str(path)),
            executor_progress=lambda p: seen.append((p.done, p.total)),
        )

    assert summary(report) == summary(expected)
    counts = {c.id: c.passes for c in report.cases}
    assert counts == {"agree": 4, "refuse": 2, "broken": 0}  # seeds 6..11: 6 and 9 say "no"
    broken = next(c for c in report.cases if c.id == "broken")
    assert broken.records[0].error == "RuntimeError: exploded on broken"
    assert str(os.getpid()) not in pids(report) and len(pids(report)) >= 1
    assert seen[0] == (0, 14) and seen[-1] == (14, 14) and len(seen) == 15


async def test_a_lost_task_is_a_failed_run_not_a_failed_eval(
    ray_head: RayHead, tmp_path: Path
) -> None:
    from keel.distributed import RayExecutor

    text = DATASET.replace("Please explode.", "Please die.")
    path = dataset_file(tmp_path, text)
    async with RayExecutor(ray_head.address) as executor:
        report = await run_dataset(
            load_dataset(path), None, None, executor=executor, work=EvalWork(dataset=str(path))
        )
    broken = next(c for c in report.cases if c.id == "broken")
    assert (broken.runs, broken.passes, broken.verdict) == (2, 0, "fail")
    assert all(r.error and r.failures[0].startswith("run failed: ") for r in broken.records)
    assert all(r.error.startswith("WorkerCrashedError") for r in broken.records if r.error)
    assert [c.passes for c in report.cases if c.id != "broken"] == [4, 2]


async def test_the_local_executor_path_matches_the_sequential_run(tmp_path: Path) -> None:
    path = dataset_file(tmp_path)
    expected = await local_report(path)
    report = await run_dataset(
        load_dataset(path),
        None,
        None,
        seed=5,
        executor=LocalExecutor(concurrency=3),
        work=EvalWork(dataset=str(path)),
    )
    assert summary(report) == summary(expected)
    assert pids(report) == {str(os.getpid())}


def test_keel_eval_executor_ray_cli(ray_head: RayHead, tmp_path: Path) -> None:
    from keel.cli import app

    path = dataset_file(tmp_path)
    out = tmp_path / "report.json"
    env = {"KEEL_DISTRIBUTED__RAY_ADDRESS": ray_head.address}
    args = ["eval", str(path), "--executor", "ray", "--seed", "5", "--json", str(out), "-q"]
    args += ["--data-dir", str(tmp_path / "data")]
    done = CliRunner().invoke(app, args, env=env)
    assert done.exit_code == 1, done.output  # the 'broken' case fails the eval
    report = EvalReport.model_validate(json.loads(out.read_text()))
    assert {c.id: c.passes for c in report.cases} == {"agree": 4, "refuse": 2, "broken": 0}
    assert str(os.getpid()) not in pids(report)


def test_keel_eval_rejects_an_unknown_executor(tmp_path: Path) -> None:
    from keel.cli import app

    done = CliRunner().invoke(app, ["eval", str(dataset_file(tmp_path)), "--executor", "dask"])
    assert done.exit_code != 0 and "choose 'local' or 'ray'" in done.output


DRIVER = """
import os, sys
import ray
ray.init(address=sys.argv[1], _node_ip_address="127.0.0.1", log_to_driver=False)
print(ray.get(ray.remote(lambda: os.getpid()).remote()) != os.getpid())
"""


def test_a_ray_auth_token_in_home_does_not_split_head_and_driver(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ray turns token authentication on when ``~/.ray/auth_token`` exists (``ray.init`` of a
    local cluster writes one): the head would then demand a token its drivers do not send."""
    pytest.importorskip("ray", reason="needs the ray extra")
    from keel.distributed.local_head import LocalRayHead

    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text("0123456789abcdef" * 4, encoding="utf-8")
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    with LocalRayHead(num_cpus=1, extra_env={"HOME": str(home)}) as head:
        env = head.env()
        assert env["RAY_AUTH_MODE"] == "disabled"
        done = subprocess.run(
            [sys.executable, "-c", DRIVER, head.address],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "True"
