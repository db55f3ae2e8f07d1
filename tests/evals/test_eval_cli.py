"""``keel eval``: the terminal report, the HTML and JSON reports, baselines and exit codes."""

import json
from pathlib import Path

from typer.testing import CliRunner

from keel.cli import app

DATASET = """\
name: cli
target:
  kind: model
  model: eval_fixtures:text_model
defaults:
  runs: 6
  threshold: 0.5
cases:
  - id: good
    input: good
    checks: [{type: exact, value: ok}]
  - id: coin
    input: coin
    threshold: 0.1
    checks: [{type: exact, value: ok}]
"""


def write(tmp_path: Path, text: str = DATASET) -> Path:
    path = tmp_path / "cli.yaml"
    path.write_text(text)
    return path


def keel(*args: str, tmp_path: Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, [*args, "--data-dir", str(tmp_path), "--quiet"])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def test_passing_dataset_exits_zero_with_table_html_and_json(tmp_path: Path) -> None:
    html, report = tmp_path / "r.html", tmp_path / "r.json"
    code, output = keel(
        "eval", str(write(tmp_path)), "--temperature", "0.5", "--html", str(html),
        "--json", str(report), tmp_path=tmp_path,
    )  # fmt: skip
    assert code == 0, output
    assert "good" in output and "6/6" in output and "pass" in output
    assert "2/2 cases passed (9/12 runs)" in " ".join(output.split())
    assert "<td><b>coin</b>" in html.read_text()
    data = json.loads(report.read_text())
    assert [c["passes"] for c in data["cases"]] == [6, 3]


def test_failing_case_exits_one_and_says_why(tmp_path: Path) -> None:
    failing = DATASET.replace("input: good", "input: bad")
    code, output = keel("eval", str(write(tmp_path, failing)), tmp_path=tmp_path)
    assert code == 1
    assert "fail" in output and "expected 'ok', got 'nope'" in output


def test_baseline_regression_exits_one_only_when_significant(tmp_path: Path) -> None:
    baseline = tmp_path / "base.json"
    path = write(tmp_path, DATASET.replace("runs: 6", "runs: 20"))
    code, _ = keel("eval", str(path), "--save-baseline", str(baseline), "--temperature", "0.5",
                   tmp_path=tmp_path)  # fmt: skip
    assert code == 0 and baseline.is_file()
    # Same behaviour: no regression.
    code, output = keel("eval", str(path), "--baseline", str(baseline), "--temperature", "0.5",
                        tmp_path=tmp_path)  # fmt: skip
    assert code == 0, output
    assert "Fisher's exact test" in " ".join(output.split())
    # 'good' now fails every run: 20/20 -> 0/20 is significant.
    worse = (
        path.read_text()
        .replace("input: good", "input: good?")
        .replace(
            "checks: [{type: exact, value: ok}]\n  - id: coin",
            "checks: [{type: exact, value: ok!}]\n  - id: coin",
        )
    )
    path.write_text(worse.replace("threshold: 0.5", "threshold: 0.0"))
    code, output = keel("eval", str(path), "--baseline", str(baseline), "--temperature", "0.5",
                        tmp_path=tmp_path)  # fmt: skip
    assert code == 1 and "regressed" in output


def test_bad_inputs_are_one_line_errors(tmp_path: Path) -> None:
    bad = write(tmp_path, DATASET.replace("kind: model", "kind: nope"))
    code, output = keel("eval", str(bad), tmp_path=tmp_path)
    assert code == 1 and output.count("\n") == 1 and "cli.yaml: target (line 3)" in output
    assert "Traceback" not in output
    code, output = keel("eval", str(tmp_path / "missing.yaml"), tmp_path=tmp_path)
    assert code == 1 and "dataset file not found" in output
    code, output = keel("eval", str(write(tmp_path)), "--case", "nope", tmp_path=tmp_path)
    assert code == 1 and "no case 'nope'" in output
    code, output = keel("eval", str(write(tmp_path)), "--baseline", str(tmp_path / "x.json"),
                        tmp_path=tmp_path)  # fmt: skip
    assert code == 1 and "baseline file not found" in output
