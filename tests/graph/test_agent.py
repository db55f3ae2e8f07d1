"""The agent loop with the scripted model: tools run, errors go back, the step limit holds."""

import pytest

from keel.errors import StepLimitError
from keel.graph import Agent
from keel.llm import ToolMessage
from keel.llm.testing import ScriptedModel, Step, tool_call
from keel.tools import ToolRegistry


def registry() -> ToolRegistry:
    tools = ToolRegistry()

    @tools.tool
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    return tools


async def test_loop_runs_tools_and_returns_the_final_answer() -> None:
    def saw_result(call: object) -> bool:
        last = call.messages[-1]  # type: ignore[attr-defined]
        return isinstance(last, ToolMessage) and last.content == "5"

    with ScriptedModel([tool_call("add", a=2, b=3), Step("2 + 3 = 5", expect=saw_result)]) as m:
        result = await Agent(m, registry(), system_prompt="Be exact.").run("What is 2 + 3?")
    assert result.output == "2 + 3 = 5"
    assert result.steps == 2
    assert [r.value for r in result.tool_results] == [5]
    assert [msg.role for msg in result.messages] == [
        "system",
        "user",
        "assistant",
        "tool",
        "assistant",
    ]
    assert m.calls[0].tools[0].name == "add"
    assert result.usage.requests == 2


async def test_bad_arguments_go_back_to_the_model_and_the_run_continues() -> None:
    def saw_error(call: object) -> bool:
        last = call.messages[-1]  # type: ignore[attr-defined]
        return (
            isinstance(last, ToolMessage) and last.is_error and "invalid_arguments" in last.content
        )

    script = [
        tool_call("add", a="two", b=3),
        Step(tool_call("add", a=2, b=3), expect=saw_error),
        "5",
    ]
    with ScriptedModel(script) as m:
        result = await Agent(m, registry()).run("2 + 3?")
    assert result.output == "5"
    assert [r.ok for r in result.tool_results] == [False, True]


async def test_parallel_calls_in_one_turn() -> None:
    with ScriptedModel([[tool_call("add", a=1, b=1), tool_call("add", a=2, b=2)], "2 and 4"]) as m:
        result = await Agent(m, registry()).run("two sums")
    assert sorted(r.value for r in result.tool_results) == [2, 4]
    assert sum(1 for msg in m.calls[1].messages if msg.role == "tool") == 2


async def test_step_limit_raises_a_typed_error() -> None:
    model = ScriptedModel([tool_call("add", a=1, b=1)] * 3)
    with pytest.raises(StepLimitError, match="made 3 model calls without a final answer"):
        await Agent(model, registry(), max_steps=3).run("loop forever")


async def test_a_repeated_call_is_not_run_again() -> None:
    runs: list[int] = []
    tools = ToolRegistry()

    @tools.tool
    def send(n: int) -> str:
        """Send message number n (a side effect)."""
        runs.append(n)
        return f"sent {n}"

    def saw_repeat(call: object) -> bool:
        last = call.messages[-1]  # type: ignore[attr-defined]
        return last.is_error and "repeated_call" in last.content and "sent 1" in last.content

    script = [tool_call("send", n=1), tool_call("send", n=1), Step("done", expect=saw_repeat)]
    with ScriptedModel(script) as m:
        result = await Agent(m, tools).run("send one message")
    assert runs == [1]
    assert [r.ok for r in result.tool_results] == [True, False]
