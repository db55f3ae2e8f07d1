"""Running datasets against deterministic models: pass rates, intervals, verdicts, targets;
regression against a baseline; the HTML report."""

from pathlib import Path

import eval_fixtures
import pytest

from keel.evals.dataset import Dataset
from keel.evals.regression import compare
from keel.evals.report import CaseResult, EvalReport, RunRecord, render_html
from keel.evals.runner import run_dataset, subject_for
from keel.llm.testing import FunctionModel, ScriptedModel, tool_call


def dataset(target: dict, cases: list[dict], **defaults: object) -> Dataset:
    return Dataset.model_validate(
        {"name": "t", "target": target, "defaults": defaults, "cases": cases}
    )


async def run(ds: Dataset, model, **kwargs) -> EvalReport:  # type: ignore[no-untyped-def]
    opened = await subject_for(ds)
    return await run_dataset(ds, model, opened.subject, **kwargs)


async def test_pass_rates_intervals_and_verdicts_from_repeated_runs() -> None:
    ds = dataset(
        {"kind": "model"},
        [
            {"id": "good", "input": "good", "checks": [{"type": "exact", "value": "ok"}]},
            {"id": "bad", "input": "bad", "checks": [{"type": "exact", "value": "ok"}]},
            {
                "id": "coin",
                "input": "coin",
                "checks": [{"type": "exact", "value": "ok"}],
                "threshold": 0.1,
            },
        ],
        runs=10,
        threshold=0.6,
        temperature=0.8,
    )
    seen: list[tuple[str, int, bool]] = []
    model = eval_fixtures.text_model()
    report = await run(ds, model, progress=lambda c, i, ok: seen.append((c.id, i, ok)))
    good, bad, coin = report.cases
    assert (good.passes, good.runs, good.passed, good.verdict) == (10, 10, True, "pass")
    assert good.ci_low == pytest.approx(0.7225, abs=1e-4) and good.pass_k == 1.0
    assert (bad.passes, bad.passed, bad.verdict) == (0, False, "fail")
    assert bad.records[0].failures == ["exact: expected 'ok', got 'nope'"]
    # seeds 1..10: even seeds pass, so 5 of 10; lower bound 0.237 clears 0.1
    assert coin.passes == 5 and coin.passed and coin.ci_low == pytest.approx(0.2366, abs=1e-4)
    assert coin.pass_k == pytest.approx(10 / 120)  # C(5,3)/C(10,3)
    assert {s.temperature for s in (c.settings for c in model.calls) if s} == {0.8}
    assert len(seen) == 30 and seen[0] == ("good", 1, True)
    assert not report.ok and [c.id for c in report.failed] == ["bad"]


async def test_run_override_and_threshold_on_the_lower_bound() -> None:
    ds = dataset(
        {"kind": "model"},
        [{"id": "good", "input": "good", "checks": [{"type": "exact", "value": "ok"}]}],
        threshold=0.5,
    )
    model = eval_fixtures.text_model()
    assert not (await run(ds, model, runs=3)).ok  # 3/3: lower bound 0.44 < 0.5
    assert (await run(ds, model, runs=5)).ok  # 5/5: lower bound 0.57


async def test_agent_target_with_tool_call_expectations() -> None:
    ds = dataset(
        {"kind": "agent", "tools": "eval_fixtures:tools", "system_prompt": "Use tools."},
        [
            {
                "id": "weather",
                "input": "Weather in Oslo?",
                "checks": [
                    {
                        "type": "tool_calls",
                        "calls": [{"name": "lookup", "arguments": {"city": "Oslo"}}],
                    },
                    {"type": "contains", "value": "21"},
                ],
            }
        ],
        runs=2,
        threshold=0.0,
    )
    script = [
        tool_call("lookup", city="Oslo"),
        "It is 21 degrees.",
        tool_call("lookup", city="Rome"),
        "21",
    ]
    report = await run(ds, ScriptedModel(script))
    (case,) = report.cases
    assert [r.passed for r in case.records] == [True, False]
    assert "no call to lookup" in case.records[1].failures[0]


async def test_function_target_and_failing_runs_are_recorded_not_raised() -> None:
    ds = dataset(
        {"kind": "function", "function": "eval_fixtures:upper"},
        [{"id": "up", "input": "shout", "checks": [{"type": "exact", "value": "SHOUT"}]}],
        runs=2,
    )
    assert (await run(ds, FunctionModel(lambda c: "unused"))).cases[0].passes == 2
    model_ds = dataset(
        {"kind": "model"},
        [{"id": "boom", "input": "x", "checks": [{"type": "exact", "value": "x"}]}],
        runs=1,
    )
    report = await run(model_ds, ScriptedModel([RuntimeError("backend down")]))
    record = report.cases[0].records[0]
    assert not record.passed and record.error == "RuntimeError: backend down"


def result(case_id: str, passes: int, runs: int) -> CaseResult:
    return CaseResult(
        id=case_id, prompt="p", runs=runs, passes=passes, threshold=0.0, pass_rate=passes / runs,
        ci_low=0.0, ci_high=1.0, pass_k=0.0, k=3, passed=True,
    )  # fmt: skip


def report_of(*cases: CaseResult) -> EvalReport:
    return EvalReport(dataset="d", model="m", target="model", confidence=0.95, cases=list(cases))


def test_regression_only_when_significant() -> None:
    baseline = report_of(result("a", 19, 20), result("b", 5, 5), result("c", 10, 20))
    current = report_of(
        result("a", 8, 20), result("b", 4, 5), result("c", 19, 20), result("d", 0, 5)
    )
    compared = compare(current, baseline, alpha=0.05)
    a, b, c, d = compared.cases
    assert a.comparison is not None and a.comparison.regressed and a.comparison.p_value < 0.001
    assert b.comparison is not None and not b.comparison.regressed  # 5/5 -> 4/5 is noise
    assert b.comparison.p_value == pytest.approx(0.5)
    assert c.comparison is not None and c.comparison.improved and not c.comparison.regressed
    assert d.comparison is None
    assert [x.id for x in compared.regressed] == ["a"] and not compared.ok
    assert "Fisher's exact test, one-sided" in compared.summary()
    assert "alpha 0.05: 95% confidence" in compared.summary()
    z = compare(current, baseline, test="z", alpha=0.01)
    assert z.cases[0].comparison is not None and z.cases[0].comparison.regressed
    assert "z-test" in (z.regression_test or "")


def test_html_report_is_self_contained_and_escaped(tmp_path: Path) -> None:
    case = result("<script>alert(1)</script>", 1, 2)
    case.records.append(
        RunRecord(
            passed=False, failures=["exact: <b>bold</b>"], output="</pre><img src=x onerror=1>"
        )
    )
    page = render_html(report_of(case))
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<img src=x" not in page and "&lt;img src=x onerror=1&gt;" in page
    assert "<b>bold</b>" not in page
    assert "http://" not in page and "https://" not in page and "<link" not in page
    assert page.startswith("<!doctype html>")


def test_report_round_trips_as_a_baseline(tmp_path: Path) -> None:
    report = report_of(result("a", 3, 4))
    report.save(tmp_path / "b.json")
    assert EvalReport.load(tmp_path / "b.json") == report
    (tmp_path / "bad.json").write_text('{"dataset": 1}')
    from keel.errors import DatasetError

    with pytest.raises(DatasetError, match=r"bad\.json: not an eval report"):
        EvalReport.load(tmp_path / "bad.json")
