"""The agent loop as a graph: tools, hard stops, degradation, approvals, journalled effects."""

import asyncio
import json
from typing import Any

from keel.graph import MemoryCheckpointer, RetryPolicy, side_effect
from keel.graph.loop import agent_graph, conversation
from keel.llm import ToolMessage
from keel.llm.testing import ScriptedModel, Step, tool_call
from keel.tools import ToolRegistry


def registry(sent: list[str] | None = None) -> ToolRegistry:
    tools = ToolRegistry()

    @tools.tool
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @tools.tool
    @side_effect
    def send(to: str) -> str:
        """Send an email (a side effect)."""
        if sent is not None:
            sent.append(to)
        return f"sent to {to}"

    return tools


async def test_the_loop_runs_tools_until_the_model_answers() -> None:
    def saw_five(call: Any) -> bool:
        last = call.messages[-1]
        return isinstance(last, ToolMessage) and last.content == "5"

    with ScriptedModel([tool_call("add", a=2, b=3), Step("2 + 3 = 5", expect=saw_five)]) as m:
        graph = agent_graph(m, registry()).compile()
        result = await graph.run({"messages": conversation("2 + 3?", "Be exact.")})
    state = result.state
    assert (state.output, state.stopped, state.turns) == ("2 + 3 = 5", "answer", 2)
    assert [msg.role for msg in state.messages] == [
        "system",
        "user",
        "assistant",
        "tool",
        "assistant",
    ]
    assert state.usage.requests == 2
    assert result.path == ("model", "tools", "model")


async def test_the_turn_limit_is_enforced_by_the_graph_not_the_model() -> None:
    model = ScriptedModel([tool_call("add", a=1, b=1)] * 3)
    graph = agent_graph(model, registry(), max_turns=3).compile()
    result = await graph.run({"messages": conversation("loop forever")})
    assert result.state.stopped == "max_turns"
    assert result.state.turns == 3
    assert model.remaining == 0


async def test_the_token_budget_stops_the_run() -> None:
    model = ScriptedModel([tool_call("add", a=1, b=1)] * 2)  # 15 tokens per call
    graph = agent_graph(model, registry(), token_budget=25).compile()
    result = await graph.run({"messages": conversation("spend")})
    assert (result.state.stopped, result.state.usage.total_tokens) == ("budget", 30)


async def test_a_failing_model_ends_with_a_structured_error_not_an_exception() -> None:
    model = ScriptedModel([ConnectionError("model server down")] * 2)
    graph = agent_graph(model, model_retry=RetryPolicy(max_attempts=2)).compile()
    result = await graph.run({"messages": conversation("hi")})
    assert result.status == "done"
    assert result.state.stopped == "model_error"
    assert result.state.output == "error: ConnectionError: model server down"
    assert result.state.errors[0].attempts == 2


async def test_a_tool_call_waits_for_approval_and_runs_with_edited_arguments() -> None:
    sent: list[str] = []

    def saw_receipt(call: Any) -> bool:
        return bool(call.messages[-1].content == "sent to boss@example.com")

    model = ScriptedModel(
        [tool_call("send", to="all@example.com"), Step("done", expect=saw_receipt)]
    )
    graph = agent_graph(model, registry(sent), approve={"send"})
    compiled = graph.compile(checkpointer=MemoryCheckpointer())
    paused = await compiled.run({"messages": conversation("mail it")}, run_id="a1")
    assert paused.status == "interrupted"
    assert paused.interrupts[0].value["arguments"] == {"to": "all@example.com"}
    assert sent == []
    answer = {"approved": True, "arguments": {"to": "boss@example.com"}}
    done = await compiled.resume("a1", answer)
    assert done.state.output == "done"
    assert sent == ["boss@example.com"]


async def test_a_denied_call_goes_back_to_the_model_as_an_error() -> None:
    def saw_denial(call: Any) -> bool:
        last = call.messages[-1]
        return bool(last.is_error and json.loads(last.content)["error"]["type"] == "denied")

    model = ScriptedModel([tool_call("send", to="x@example.com"), Step("ok", expect=saw_denial)])
    compiled = agent_graph(model, registry(), approve={"send"}).compile(
        checkpointer=MemoryCheckpointer()
    )
    await compiled.run({"messages": conversation("mail it")}, run_id="d1")
    done = await compiled.resume("d1", {"approved": False, "reason": "not today"})
    assert done.state.output == "ok"


async def test_an_effectful_call_is_not_repeated_when_its_step_runs_again() -> None:
    sent: list[str] = []
    gate = asyncio.Event()
    started = asyncio.Event()
    tools = registry(sent)

    @tools.tool
    async def wait() -> str:
        """Wait for the gate."""
        started.set()
        await gate.wait()
        return "waited"

    model = ScriptedModel([[tool_call("send", to="a@example.com"), tool_call("wait")], "done"])
    checkpointer = MemoryCheckpointer()
    compiled = agent_graph(model, tools).compile(checkpointer=checkpointer)
    task = asyncio.create_task(compiled.run({"messages": conversation("go")}, run_id="e1"))
    await started.wait()
    # step 2 is the tools step; its first effect is the send() call
    while await checkpointer.get_effect("e1", "2/tools#0/effect0") is None:  # noqa: ASYNC110
        await asyncio.sleep(0.001)
    task.cancel()  # the tools step is cut short after send() ran
    await asyncio.gather(task, return_exceptions=True)
    gate.set()
    result = await compiled.resume("e1")
    assert result.state.output == "done"
    assert sent == ["a@example.com"]  # the resumed step replayed the journalled result
    tool_messages = [m for m in result.state.messages if isinstance(m, ToolMessage)]
    assert [m.content for m in tool_messages] == ["sent to a@example.com", "waited"]


async def test_streaming_the_loop_yields_model_tokens_and_tool_results() -> None:
    model = ScriptedModel([tool_call("add", a=1, b=2), "three"])
    events = [e async for e in agent_graph(model, registry()).compile().stream(
        {"messages": conversation("1 + 2?")}
    )]  # fmt: skip
    custom = [(e.data["name"], e.data["data"]) for e in events if e.kind == "custom"]
    assert ("token", "three") in custom
    assert any(name == "tool_call" and data.name == "add" for name, data in custom)
    assert any(name == "tool_result" and data.content == "3" for name, data in custom)
