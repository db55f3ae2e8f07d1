"""Dataset files: valid ones load (YAML, JSON, Python, shipped suites); bad ones give one line
naming the file, the location in it and the YAML line."""

import json
from pathlib import Path

import pytest

from keel.errors import DatasetError
from keel.evals.dataset import (
    CitationsCheck,
    JsonSchemaCheck,
    QATarget,
    load_dataset,
    shipped_suites,
)

GOOD = """\
name: sample
target:
  kind: model
defaults:
  runs: 2
  threshold: 0.3
cases:
  - id: one
    input: Say ok
    checks:
      - type: exact
        value: ok
  - id: two
    input:
      - {role: system, content: Be brief.}
      - {role: user, content: Give JSON}
    threshold: 0.9
    runs: 4
    checks:
      - type: json_schema
        schema: {type: object}
"""


def write(tmp_path: Path, text: str, name: str = "d.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_yaml_dataset_loads_with_defaults_and_overrides(tmp_path: Path) -> None:
    dataset = load_dataset(write(tmp_path, GOOD))
    one, two = dataset.cases
    assert dataset.runs_of(one) == 2 and dataset.threshold_of(one) == 0.3
    assert dataset.runs_of(two) == 4 and dataset.threshold_of(two) == 0.9
    assert two.prompt == "Give JSON"
    assert isinstance(two.checks[0], JsonSchemaCheck)
    assert dataset.path == (tmp_path / "d.yaml").resolve()


def test_json_and_python_datasets(tmp_path: Path) -> None:
    import yaml

    data = yaml.safe_load(GOOD)
    assert load_dataset(write(tmp_path, json.dumps(data), "d.json")).name == "sample"
    code = f"from keel.evals import Dataset\ndataset = Dataset.model_validate({data!r})\n"
    assert len(load_dataset(write(tmp_path, code, "d.py")).cases) == 2


def test_shipped_demo_suite_loads() -> None:
    assert "demo" in shipped_suites()
    dataset = load_dataset("demo")
    assert isinstance(dataset.target, QATarget) and dataset.target.docs == "demo"
    assert len(dataset.cases) >= 8
    for case in dataset.cases:
        cites = [c for c in case.checks if isinstance(c, CitationsCheck)]
        assert cites, f"{case.id} has no citation check"
        corpus = Path(__file__).parents[2] / "src" / "keel" / "demo" / "corpus"
        for source in cites[0].sources:
            text = (corpus / source.file).read_text()
            assert f"## {source.section}" in text


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("value: ok", "value: [ok"), r"d\.yaml: line 13: not valid YAML"),
        (("kind: model", "kind: robot"), r"d\.yaml: target \(line 3\): .*tag 'robot'"),
        (("type: exact", "type: exactly"), r"cases\[0\]\.checks\[0\] \(line 11\): .*'exactly'"),
        (("threshold: 0.9", "threshold: 1.5"), r"cases\[1\]\.threshold \(line 17\): .*less than"),
        (("id: two", "id: one"), r"d\.yaml: \(top level\).*two cases have the id 'one'"),
        (("  - id: one", "  - idx: one"), r"cases\[0\]\.id \(line 8\): Field required"),
        (
            ("schema: {type: object}", "schema: {type: 12}"),
            r"cases\[1\]\.checks\[0\]\.schema \(line 21\): not a valid JSON schema",
        ),
        (
            ("role: system", "role: robot"),
            r"cases\[1\]\.input\[0\]\.role \(line 15\): Input should be 'system'",
        ),
    ],
)
def test_bad_files_name_file_location_and_line(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    path = write(tmp_path, GOOD.replace(*change, 1))
    with pytest.raises(DatasetError, match=message) as caught:
        load_dataset(path)
    assert "\n" not in str(caught.value)
    assert str(path) in str(caught.value)


def test_bad_regex_and_reference_are_rejected_at_load(tmp_path: Path) -> None:
    bad_regex = GOOD.replace("type: exact\n        value: ok", "type: regex\n        pattern: '('")
    with pytest.raises(DatasetError, match=r"pattern \(line 12\): not a valid regular expression"):
        load_dataset(write(tmp_path, bad_regex))
    bad_ref = GOOD.replace("type: exact\n        value: ok", "type: custom\n        function: nope")
    with pytest.raises(
        DatasetError,
        match=r"checks\[0\]\.function \(line 12\): 'nope' is not a 'module:name' reference",
    ):
        load_dataset(write(tmp_path, bad_ref))


def test_missing_file_and_wrong_shapes(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="dataset file not found"):
        load_dataset(tmp_path / "nope.yaml")
    with pytest.raises(DatasetError, match="is a mapping"):
        load_dataset(write(tmp_path, "- just a list\n"))
    with pytest.raises(DatasetError, match=r"\.yaml, \.yml, \.json or \.py"):
        load_dataset(write(tmp_path, GOOD, "d.txt"))
    with pytest.raises(DatasetError, match="defines no 'dataset'"):
        load_dataset(write(tmp_path, "x = 1\n", "d.py"))
