"""``keel graph show`` prints Mermaid text and fails with one clear line."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from keel.graph.cli import app

MODULE = """
from pydantic import BaseModel
from keel.graph import START, Graph

class S(BaseModel):
    x: int = 0

graph = Graph(S)
graph.add_node("plan", lambda s: None)
graph.add_node("act", lambda s: None)
graph.add_edge(START, "plan").add_edge("plan", "act")
compiled = graph.compile()

def build():
    return graph
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "cli_flow_mod.py").write_text(MODULE)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("attribute", ["graph", "compiled", "build"])
def test_show_prints_mermaid(project: Path, attribute: str) -> None:
    result = CliRunner().invoke(app, ["show", f"cli_flow_mod:{attribute}"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("flowchart TD\n")
    assert "n_plan --> n_act" in result.output


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("nocolon", "is not MODULE:ATTRIBUTE"),
        ("no_such_module_xyz:graph", "cannot import"),
        ("cli_flow_mod:missing", "has no attribute"),
        ("cli_flow_mod:S", "is a S, not a Graph"),
    ],
)
def test_bad_targets_fail_with_one_line(project: Path, target: str, message: str) -> None:
    result = CliRunner().invoke(app, ["show", target])
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output
