"""Checks: each decides whether one run's ``Outcome`` meets one expectation, and says why not.

Every check returns a ``CheckResult``; a check that cannot run (a custom function that raised, a
judge that gave no verdict) fails with the reason, so one bad run never stops an eval.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field, ValidationError

from keel.errors import KeelError, MissingDependencyError
from keel.evals.dataset import (
    Case,
    Check,
    CitationsCheck,
    ContainsCheck,
    CustomCheck,
    ExactCheck,
    ExpectedCall,
    ExpectedSource,
    JsonSchemaCheck,
    JudgeCheck,
    PydanticCheck,
    RegexCheck,
    ToolCallsCheck,
    resolve_reference,
)
from keel.llm.messages import Message, SystemMessage, ToolCallPart, UserMessage

if TYPE_CHECKING:
    from keel.llm.base import Model

__all__ = ["CheckResult", "CitedSource", "JudgeVerdict", "Outcome", "run_check"]


@dataclass(frozen=True)
class CitedSource:
    """A citation of an answer: the document and the heading path of the cited chunk."""

    source: str
    heading: str = ""


@dataclass(frozen=True)
class Outcome:
    """What one run of a case produced, as the checks see it."""

    output: str
    tool_calls: tuple[ToolCallPart, ...] = ()
    citations: tuple[CitedSource, ...] = ()
    data: Any = None
    """The full structured result (e.g. the ``GroundedAnswer`` as a dict), for custom checks."""
    error: str | None = None
    """Set when the run itself failed (the checks are then not run)."""
    usage_tokens: int = 0
    run_id: str | None = None
    """The recording of this run, when runs are recorded."""
    messages: tuple[Message, ...] = field(default=(), repr=False)


@dataclass(frozen=True)
class CheckResult:
    passed: bool
    check: str
    detail: str = ""


def _short(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _exact(check: ExactCheck, out: Outcome) -> CheckResult:
    got, want = out.output, check.value
    if check.strip:
        got, want = got.strip(), want.strip()
    if not check.case_sensitive:
        got, want = got.casefold(), want.casefold()
    ok = got == want
    return CheckResult(ok, "exact", "" if ok else f"expected {_short(want)!r}, got {_short(got)!r}")


def _contains(check: ContainsCheck, out: Outcome) -> CheckResult:
    text = out.output if check.case_sensitive else out.output.casefold()
    values = check.values
    found = [v for v in values if (v if check.case_sensitive else v.casefold()) in text]
    ok = len(found) == len(values) if check.mode == "all" else bool(found)
    missing = [v for v in values if v not in found]
    detail = "" if ok else f"missing {', '.join(map(repr, missing))} in {_short(out.output)!r}"
    return CheckResult(ok, "contains", detail)


def _regex(check: RegexCheck, out: Outcome) -> CheckResult:
    pattern = re.compile(check.pattern, re.IGNORECASE if check.ignore_case else 0)
    match = pattern.fullmatch(out.output) if check.full else pattern.search(out.output)
    detail = "" if match else f"/{check.pattern}/ does not match {_short(out.output)!r}"
    return CheckResult(match is not None, "regex", detail)


def _json_schema(check: JsonSchemaCheck, out: Outcome) -> CheckResult:
    try:
        import jsonschema
    except ImportError:
        raise MissingDependencyError("jsonschema", "evals", feature="json_schema checks") from None
    try:
        value = json.loads(out.output)
    except json.JSONDecodeError as e:
        return CheckResult(False, "json_schema", f"output is not JSON: {e.msg}")
    errors = sorted(
        jsonschema.Draft202012Validator(check.json_schema).iter_errors(value), key=lambda e: e.path
    )
    if not errors:
        return CheckResult(True, "json_schema")
    first = errors[0]
    where = "/".join(str(p) for p in first.absolute_path) or "(root)"
    return CheckResult(False, "json_schema", f"{where}: {_short(first.message)}")


def _pydantic(check: PydanticCheck, out: Outcome) -> CheckResult:
    model = resolve_reference(check.model, what="Pydantic model")
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise KeelError(f"{check.model} is not a Pydantic model class")
    try:
        model.model_validate_json(out.output)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(root)"
        return CheckResult(False, "pydantic", f"{model.__name__} {where}: {first['msg']}")
    return CheckResult(True, "pydantic")


def _call_matches(expected: ExpectedCall, call: ToolCallPart) -> bool:
    if expected.name != call.name:
        return False
    if expected.arguments is None:
        return True
    return all(call.arguments.get(k, _MISSING) == v for k, v in expected.arguments.items())


_MISSING = object()


def _describe(calls: Sequence[ToolCallPart]) -> str:
    if not calls:
        return "no tool calls"
    return ", ".join(f"{c.name}({json.dumps(c.arguments, sort_keys=True)})" for c in calls)


def _tool_calls(check: ToolCallsCheck, out: Outcome) -> CheckResult:
    calls = list(out.tool_calls)
    forbidden = [c.name for c in calls if c.name in check.forbid]
    if forbidden:
        return CheckResult(False, "tool_calls", f"called forbidden tool {forbidden[0]!r}")
    used: set[int] = set()
    start = 0
    for expected in check.calls:
        pool = range(start, len(calls)) if check.ordered else range(len(calls))
        index = next((i for i in pool if i not in used and _call_matches(expected, calls[i])), None)
        if index is None:
            wanted = expected.name + (
                f" with {json.dumps(expected.arguments, sort_keys=True)}"
                if expected.arguments is not None
                else ""
            )
            order = " (in order)" if check.ordered else ""
            return CheckResult(
                False, "tool_calls", f"no call to {wanted}{order}; got {_describe(calls)}"
            )
        used.add(index)
        start = index + 1
    if check.exact and len(used) != len(calls):
        extra = [calls[i] for i in range(len(calls)) if i not in used]
        return CheckResult(False, "tool_calls", f"unexpected calls: {_describe(extra)}")
    return CheckResult(True, "tool_calls")


def _section_matches(expected: ExpectedSource, cited: CitedSource) -> bool:
    if expected.file != cited.source and not cited.source.endswith("/" + expected.file):
        return False
    if expected.section is None:
        return True
    want = expected.section.casefold().strip()
    heading = cited.heading.casefold()
    last = heading.split(" > ")[-1].strip()
    return want in (last, heading.strip()) or heading.endswith(" > " + want)


def _citations(check: CitationsCheck, out: Outcome) -> CheckResult:
    matched = [e for e in check.sources if any(_section_matches(e, c) for c in out.citations)]
    ok = len(matched) == len(check.sources) if check.mode == "all" else bool(matched)
    if ok:
        return CheckResult(True, "citations")
    cited = "; ".join(f"{c.source} § {c.heading}" for c in out.citations) or "nothing"
    missing = [e for e in check.sources if e not in matched]
    wanted = "; ".join(f"{e.file}" + (f" § {e.section}" if e.section else "") for e in missing)
    return CheckResult(False, "citations", f"expected {wanted}; cited {cited}")


async def _custom(check: CustomCheck, out: Outcome) -> CheckResult:
    function = resolve_reference(check.function, what="check function")
    if not callable(function):
        raise KeelError(f"{check.function} is not callable")
    try:
        verdict = function(out, **check.args)
        if inspect.isawaitable(verdict):
            verdict = await verdict
    except Exception as e:  # a user's check that raised fails the run, not the eval
        return CheckResult(False, "custom", f"{check.function} raised {type(e).__name__}: {e}")
    if isinstance(verdict, CheckResult):
        return verdict
    if isinstance(verdict, tuple) and len(verdict) == 2:
        return CheckResult(bool(verdict[0]), "custom", "" if verdict[0] else str(verdict[1]))
    if isinstance(verdict, bool):
        return CheckResult(verdict, "custom", "" if verdict else f"{check.function} said no")
    raise KeelError(
        f"{check.function} returned {type(verdict).__name__}; return a bool, a (bool, reason) "
        "pair or a CheckResult"
    )


class JudgeVerdict(BaseModel):
    """What a judge model answers: its reasoning first (so it reasons before deciding)."""

    reason: str = Field(max_length=400)
    passed: bool


JUDGE_PROMPT = (
    "You grade an answer against a rubric. Reply with a short reason, then passed: true only "
    "if the answer meets every point of the rubric."
)


def judge_messages(check: JudgeCheck, case: Case, out: Outcome) -> list[Message]:
    parts = [f"Rubric:\n{check.rubric}", f"Question:\n{case.prompt}"]
    if case.expected:
        parts.append(f"Reference answer:\n{case.expected}")
    parts.append(f"Answer to grade:\n{out.output}")
    return [SystemMessage(content=JUDGE_PROMPT), UserMessage(content="\n\n".join(parts))]


async def _judge(check: JudgeCheck, case: Case, out: Outcome, judge: Model) -> CheckResult:
    from keel.llm.structured import request_structured

    try:
        result = await request_structured(judge, judge_messages(check, case, out), JudgeVerdict)
    except KeelError as e:
        return CheckResult(False, "judge", f"the judge gave no verdict: {e}")
    verdict = result.output
    return CheckResult(verdict.passed, "judge", "" if verdict.passed else _short(verdict.reason))


async def run_check(check: Check, case: Case, out: Outcome, judge: Model | None) -> CheckResult:
    """Run one check on one outcome; ``judge`` answers ``judge`` checks."""
    if isinstance(check, ExactCheck):
        return _exact(check, out)
    if isinstance(check, ContainsCheck):
        return _contains(check, out)
    if isinstance(check, RegexCheck):
        return _regex(check, out)
    if isinstance(check, JsonSchemaCheck):
        return _json_schema(check, out)
    if isinstance(check, PydanticCheck):
        return _pydantic(check, out)
    if isinstance(check, ToolCallsCheck):
        return _tool_calls(check, out)
    if isinstance(check, CitationsCheck):
        return _citations(check, out)
    if isinstance(check, CustomCheck):
        return await _custom(check, out)
    if judge is None:
        raise KeelError("a judge check needs a judge model (keel eval --judge MODEL)")
    return await _judge(check, case, out, judge)
