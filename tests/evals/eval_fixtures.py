"""Objects the eval test datasets reference as 'eval_fixtures:name' (tests/evals is on sys.path
while its tests run)."""

from __future__ import annotations

from pydantic import BaseModel

from keel.evals.checks import CheckResult, Outcome
from keel.evals.dataset import Case
from keel.llm.base import Model
from keel.llm.testing import FunctionModel, ModelCall
from keel.tools.registry import ToolRegistry


def answer(call: ModelCall) -> str:
    """Answers 'ok' to prompts containing 'good', 'nope' to others; with a seed, passes only on
    even seeds when the prompt contains 'coin'."""
    text = call.last_user_text
    if "coin" in text:
        seed = call.settings.seed if call.settings is not None and call.settings.seed else 0
        return "ok" if seed % 2 == 0 else "nope"
    if "json" in text:
        return '{"name": "Ada", "age": 36}'
    return "ok" if "good" in text else "nope"


def text_model() -> Model:
    return FunctionModel(answer, name="fixture-model")


class Person(BaseModel):
    name: str
    age: int


def is_short(outcome: Outcome, limit: int = 5) -> tuple[bool, str]:
    return len(outcome.output) <= limit, f"{len(outcome.output)} characters"


async def says_ok(outcome: Outcome) -> CheckResult:
    return CheckResult(outcome.output == "ok", "custom", "not ok")


def broken_check(outcome: Outcome) -> bool:
    raise RuntimeError("boom")


async def upper(model: Model, case: Case) -> str:
    return case.prompt.upper()


tools = ToolRegistry()


@tools.tool
def lookup(city: str, units: str = "metric") -> dict[str, object]:
    """Weather in a city.

    Args:
        city: the city
        units: metric or imperial
    """
    return {"city": city, "temperature": 21 if units == "metric" else 70}
