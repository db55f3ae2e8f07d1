"""Every example under examples/ runs offline and prints what it promises."""

import subprocess
import sys
from pathlib import Path

import pytest

from keel.graph.cli import load_graph

ROOT = Path(__file__).parents[2]
EXPECTED = {
    "prompt_chaining.py": "stopped: done",
    "routing.py": "route=billing: A refund",
    "parallelization.py": "majority: safe",
    "orchestrator_workers.py": "- Propose indexes: done: propose indexes",
    "evaluator_optimizer.py": "accepted=True after 2 rounds",
    "handoff.py": "triage -> billing",
    "durable_agent.py": "Email sent. ['team@example.com']",
}


def test_every_example_is_checked() -> None:
    assert sorted(p.name for p in (ROOT / "examples").glob("*.py")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs_offline(name: str) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert EXPECTED[name] in result.stdout


def test_examples_can_be_drawn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    text = load_graph("examples.routing:graph").mermaid()
    assert "n_classify -.-> n_billing" in text
