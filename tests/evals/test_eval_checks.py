"""Every check type passes when it should and fails (with a reason) when it should not."""

from typing import Any

import pytest
from pydantic import TypeAdapter

from keel.errors import KeelError
from keel.evals.checks import CitedSource, Outcome, run_check
from keel.evals.dataset import Case, Check
from keel.llm.messages import ToolCallPart
from keel.llm.testing import FunctionModel, ModelCall

CHECK = TypeAdapter(Check)


def case(**extra: Any) -> Case:
    return Case.model_validate(
        {"id": "c", "input": "What is it?", "checks": [{"type": "exact", "value": "x"}], **extra}
    )


async def check(spec: dict[str, Any], outcome: Outcome, judge: Any = None) -> tuple[bool, str]:
    result = await run_check(CHECK.validate_python(spec), case(), outcome, judge)
    return result.passed, result.detail


async def test_exact() -> None:
    assert (await check({"type": "exact", "value": "Paris"}, Outcome(output=" Paris\n")))[0]
    passed, detail = await check({"type": "exact", "value": "Paris"}, Outcome(output="paris"))
    assert not passed and "'Paris'" in detail
    assert (
        await check(
            {"type": "exact", "value": "Paris", "case_sensitive": False}, Outcome(output="paris")
        )
    )[0]


async def test_contains_all_and_any() -> None:
    out = Outcome(output="Olympus Mons is a volcano on Mars")
    assert (await check({"type": "contains", "value": ["olympus", "mars"]}, out))[0]
    passed, detail = await check({"type": "contains", "value": ["olympus", "venus"]}, out)
    assert not passed and "'venus'" in detail
    assert (await check({"type": "contains", "value": ["venus", "mars"], "mode": "any"}, out))[0]
    assert not (await check({"type": "contains", "value": "mars", "case_sensitive": True}, out))[0]


async def test_regex() -> None:
    out = Outcome(output="It returns in 2061.")
    assert (await check({"type": "regex", "pattern": r"\b20\d\d\b"}, out))[0]
    assert not (await check({"type": "regex", "pattern": r"^\d+$", "full": True}, out))[0]
    assert (await check({"type": "regex", "pattern": "IT RETURNS", "ignore_case": True}, out))[0]


async def test_json_schema() -> None:
    schema = {
        "type": "object",
        "properties": {"age": {"type": "integer"}},
        "required": ["age"],
    }
    spec = {"type": "json_schema", "schema": schema}
    assert (await check(spec, Outcome(output='{"age": 3}')))[0]
    passed, detail = await check(spec, Outcome(output='{"age": "three"}'))
    assert not passed and detail.startswith("age:")
    passed, detail = await check(spec, Outcome(output="not json"))
    assert not passed and "not JSON" in detail


async def test_pydantic_model_validity() -> None:
    spec = {"type": "pydantic", "model": "eval_fixtures:Person"}
    assert (await check(spec, Outcome(output='{"name": "Ada", "age": 36}')))[0]
    passed, detail = await check(spec, Outcome(output='{"name": "Ada"}'))
    assert not passed and "Person age" in detail


def calls(*pairs: tuple[str, dict[str, Any]]) -> Outcome:
    parts = tuple(ToolCallPart(id=f"c{i}", name=n, arguments=a) for i, (n, a) in enumerate(pairs))
    return Outcome(output="done", tool_calls=parts)


async def test_tool_calls_names_arguments_and_order() -> None:
    out = calls(("search", {"q": "mars", "k": 3}), ("fetch", {"url": "u"}))
    spec = {"type": "tool_calls", "calls": [{"name": "fetch"}, {"name": "search"}]}
    assert (await check(spec, out))[0]
    assert not (await check({**spec, "ordered": True}, out))[0]
    with_args = {"type": "tool_calls", "calls": [{"name": "search", "arguments": {"q": "mars"}}]}
    assert (await check(with_args, out))[0]
    wrong = {"type": "tool_calls", "calls": [{"name": "search", "arguments": {"q": "venus"}}]}
    passed, detail = await check(wrong, out)
    assert not passed and "no call to search" in detail and '"mars"' in detail
    assert not (await check({**with_args, "exact": True}, out))[0]
    assert not (await check({"type": "tool_calls", "forbid": ["fetch"]}, out))[0]
    assert not (await check({"type": "tool_calls", "calls": [{"name": "search"}]}, calls()))[0]


async def test_citations_by_file_and_section() -> None:
    out = Outcome(
        output="...",
        citations=(
            CitedSource("03-venus.md", "Venus > Clouds of sulfuric acid and a super-rotating sky"),
            CitedSource("01-the-sun.md", "The Sun > The future of the Sun"),
        ),
    )
    venus = {"file": "03-venus.md", "section": "Clouds of sulfuric acid and a super-rotating sky"}
    assert (await check({"type": "citations", "sources": [venus]}, out))[0]
    assert (await check({"type": "citations", "sources": [{"file": "01-the-sun.md"}]}, out))[0]
    other = {"file": "03-venus.md", "section": "Retrograde rotation"}
    passed, detail = await check({"type": "citations", "sources": [other]}, out)
    assert not passed and "Retrograde rotation" in detail and "cited 03-venus.md" in detail
    both = {"type": "citations", "sources": [venus, other]}
    assert (await check(both, out))[0]
    assert not (await check({**both, "mode": "all"}, out))[0]
    assert not (await check({"type": "citations", "sources": [venus]}, Outcome(output="x")))[0]


async def test_custom_functions_sync_async_and_raising() -> None:
    short = {"type": "custom", "function": "eval_fixtures:is_short", "args": {"limit": 3}}
    assert (await check(short, Outcome(output="ok")))[0]
    passed, detail = await check(short, Outcome(output="too long"))
    assert not passed and detail == "8 characters"
    assert (await check({"type": "custom", "function": "eval_fixtures:says_ok"}, Outcome("ok")))[0]
    assert not (
        await check({"type": "custom", "function": "eval_fixtures:says_ok"}, Outcome("no"))
    )[0]
    passed, detail = await check(
        {"type": "custom", "function": "eval_fixtures:broken_check"}, Outcome("x")
    )
    assert not passed and "RuntimeError: boom" in detail


async def test_judge_returns_structured_verdict() -> None:
    def judge(call: ModelCall) -> str:
        assert call.output_schema is not None and "passed" in call.output_schema["properties"]
        good = "Answer to grade:\nParis" in call.last_user_text
        return f'{{"reason": "{"right" if good else "wrong city"}", "passed": {str(good).lower()}}}'

    spec = {"type": "judge", "rubric": "Names the capital of France."}
    model = FunctionModel(judge)
    assert (await check(spec, Outcome(output="Paris"), model))[0]
    passed, detail = await check(spec, Outcome(output="Lyon"), model)
    assert not passed and detail == "wrong city"
    assert "Names the capital of France." in model.calls[0].last_user_text
    with pytest.raises(KeelError, match="judge model"):
        await check(spec, Outcome(output="Paris"), None)


async def test_judge_that_never_gives_a_verdict_fails_the_run() -> None:
    model = FunctionModel(lambda call: "I think it is fine")
    passed, detail = await check({"type": "judge", "rubric": "r"}, Outcome("x"), model)
    assert not passed and "no verdict" in detail
