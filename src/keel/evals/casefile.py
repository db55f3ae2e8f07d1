"""Turning a recorded run into a regression case, appended to a dataset file.

An ``ask`` run becomes a case whose checks are the citations the run made (file and section);
an ``agent`` run, one whose checks are the tool calls it made, in order. ``exact=True`` adds an
exact check on the recorded answer. The case is appended as YAML text at the end of the file's
``cases`` list, so the rest of the file (comments included) is left as it was; the result is
validated, and the file restored, if it does not load.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from keel.errors import DatasetError, MissingDependencyError
from keel.evals.dataset import load_dataset
from keel.evals.record import RecordedRun

__all__ = ["append_case", "case_from_run", "dataset_for_run"]


def case_from_run(
    run: RecordedRun, *, exact: bool = False, case_id: str | None = None
) -> dict[str, Any]:
    """A case (as plain data) that expects what ``run`` did."""
    if run.output is None:
        raise DatasetError(f"run {run.run_id[:12]} failed ({run.error}); it cannot become a case")
    case: dict[str, Any] = {"id": case_id or f"run-{run.run_id[:12]}"}
    checks: list[dict[str, Any]] = []
    if run.kind == "ask":
        case["input"] = run.meta["question"]
        answer = str(run.output.get("answer", ""))
        case["expected"] = answer
        sources = []
        for c in run.output.get("citations", []):
            source = {"file": c["source"], "section": c["heading"].split(" > ")[-1]}
            if source not in sources:
                sources.append(source)
        if sources:
            checks.append({"type": "citations", "sources": sources, "mode": "all"})
    else:
        prompt = run.meta["prompt"]
        case["input"] = (
            prompt[0]["content"]
            if len(prompt) == 1 and prompt[0]["role"] == "user"
            else [{"role": m["role"], "content": m["content"]} for m in prompt]
        )
        answer = str(run.output.get("output", ""))
        case["expected"] = answer
        calls = [{"name": c["name"], "arguments": c["arguments"]} for c in run.output["tool_calls"]]
        checks.append({"type": "tool_calls", "calls": calls, "ordered": True, "exact": True})
    if exact or not checks:
        checks.append({"type": "exact", "value": answer})
    case["checks"] = checks
    return case


def dataset_for_run(run: RecordedRun, name: str) -> dict[str, Any]:
    """A new dataset (as plain data) for cases made from runs like ``run``."""
    target: dict[str, Any]
    if run.kind == "ask":
        docs = str(run.meta.get("docs", "demo"))
        target = {"kind": "qa", "docs": docs, "top_k": run.meta.get("top_k")}
    else:
        target = {"kind": "agent", "system_prompt": run.meta.get("system_prompt", "")}
    return {
        "name": name,
        "description": "Regression cases made from recorded runs (keel replay RUN --save-case).",
        "target": {k: v for k, v in target.items() if v is not None},
        "defaults": {"runs": 3, "threshold": 0.2},
        "cases": [],
    }


def _dump(data: Any) -> str:
    try:
        import yaml
    except ImportError:
        raise MissingDependencyError("pyyaml", "evals", feature="YAML eval datasets") from None
    text: str = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)
    return text


def append_case(path: Path, case: dict[str, Any], new_dataset: dict[str, Any]) -> None:
    """Append ``case`` to the dataset at ``path`` (created from ``new_dataset`` if missing)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_dump({**new_dataset, "cases": [case]}), encoding="utf-8")
        load_dataset(path)
        return
    dataset = load_dataset(path)
    if any(c.id == case["id"] for c in dataset.cases):
        raise DatasetError(f"{path}: a case with id {case['id']!r} is already there")
    if path.suffix not in (".yaml", ".yml"):
        raise DatasetError(f"{path}: cases can be appended to YAML datasets only")
    original = path.read_text(encoding="utf-8")
    block = _dump([case])
    indent = _cases_indent(original)
    if indent is None:
        raise DatasetError(
            f"{path}: 'cases' must be the last top-level key, as a block list, to append to it"
        )
    lines = "".join(
        " " * indent + line if line.strip() else line for line in block.splitlines(True)
    )
    path.write_text(original.rstrip("\n") + "\n" + lines, encoding="utf-8")
    try:
        load_dataset(path)
    except DatasetError:
        path.write_text(original, encoding="utf-8")
        raise


def _cases_indent(text: str) -> int | None:
    """The column of the items of a trailing block-style top-level ``cases`` list."""
    import yaml

    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if not isinstance(root, yaml.MappingNode) or not root.value:
        return None
    key, value = root.value[-1]
    if key.value != "cases" or not isinstance(value, yaml.SequenceNode) or value.flow_style:
        return None
    if not value.value:
        return None
    column: int = value.value[0].start_mark.column
    return max(0, column - 2)
