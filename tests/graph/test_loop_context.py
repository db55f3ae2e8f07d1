"""The agent loop under a context window: long runs never send a request over the budget."""

from typing import Any

import pytest

from keel.context import ContextBuilder, RetrievedItem, Summarizer
from keel.errors import ConfigError
from keel.graph.loop import agent_graph, conversation
from keel.llm import (
    AssistantMessage,
    Message,
    ModelSettings,
    SystemMessage,
    TextPart,
    ToolCallPart,
    ToolMessage,
    UserMessage,
)
from keel.llm.local import LlamaCppModel
from keel.llm.testing import FunctionModel, ModelCall, ScriptedModel, tool_call
from keel.tools import ToolRegistry

SYSTEM = "You read log pages and report the error count."
REQUEST = "How many errors are in pages 0 to 28 of the server log?"


def log_tools() -> ToolRegistry:
    tools = ToolRegistry()

    @tools.tool
    def read_page(page: int) -> str:
        """Read one page of the server log."""
        return f"page {page} begins\n" + f"line of page {page}: ok, no error\n" * 300 + "ends"

    return tools


def reader(last_turn: int = 30) -> FunctionModel:
    """Reads one page per turn, then answers on turn ``last_turn``."""

    turns = 0

    def reply(call: ModelCall) -> Any:
        nonlocal turns  # counted here: old turns slide out of what the model is sent
        turns += 1
        turn = turns
        if turn >= last_turn:
            return "No errors in any page."
        return tool_call("read_page", page=turn - 1)

    return FunctionModel(reply)


async def fits(builder: ContextBuilder, call: ModelCall) -> bool:
    return await builder.model.count_tokens(call.messages, tools=call.tools) <= builder.budget


async def test_a_30_turn_run_with_large_tool_outputs_stays_in_the_window() -> None:
    model = reader()
    builder = ContextBuilder(model, context_window=1500, reserve_output=100)
    graph = agent_graph(model, log_tools(), max_turns=30, context=builder)
    result = await graph.compile().run({"messages": conversation(REQUEST, SYSTEM)})

    state = result.state
    assert (state.stopped, state.turns, state.output) == ("answer", 30, "No errors in any page.")
    assert len(model.calls) == 30
    # Without the builder the last request would be many times over the window.
    assert await model.count_tokens(state.messages) > 10 * builder.budget
    for call in model.calls:
        assert await fits(builder, call)
        assert isinstance(call.messages[0], SystemMessage)
        assert call.messages[0].content.startswith(SYSTEM)
        assert [m.content for m in call.messages if isinstance(m, UserMessage)] == [REQUEST]
    last = model.calls[-1].messages
    # The request keeps its place before the tool exchange; the newest result is last.
    assert [m.role for m in last[:3]] == ["system", "user", "assistant"]
    assert isinstance(last[-1], ToolMessage) and "page 28 begins" in last[-1].content
    assert "characters omitted" in last[-1].content  # tool outputs are capped
    assert "page 0 begins" not in str(last)  # the oldest results slid out of the window


async def test_old_turns_are_summarised_and_memory_sits_at_the_edges() -> None:
    model = reader(last_turn=20)
    summaries: list[ModelCall] = []

    def summarise(call: ModelCall) -> str:
        summaries.append(call)
        return f"Pages read so far: {len(summaries)} batches, no errors."

    summarizer = Summarizer(FunctionModel(summarise), max_tokens=40)
    builder = ContextBuilder(model, context_window=1500, reserve_output=100, summarizer=summarizer)
    earlier: list[Message] = [
        UserMessage(content="Which log do you read? " + "Context. " * 80),
        AssistantMessage(parts=(TextPart(text="The server log. " * 40),)),
    ]
    memory = [
        RetrievedItem("Errors are lines with ERROR.", score=0.9, source="guide.md"),
        RetrievedItem("Pages have 300 lines.", score=0.5, source="format.md"),
    ]
    graph = agent_graph(model, log_tools(), max_turns=20, context=builder)
    messages = conversation([*earlier, UserMessage(content=REQUEST)], SYSTEM)
    result = await graph.compile().run({"messages": messages, "memory": memory})

    assert (result.state.stopped, result.state.turns) == ("answer", 20)
    assert summaries, "the window slid, so old turns must have been summarised"
    assert len(summaries) < 20  # incremental: not one summary call per turn
    assert result.state.summary.covered > 0
    for call in model.calls:
        assert await fits(builder, call)
        assert isinstance(call.messages[0], SystemMessage)
        system = call.messages[0].content
        assert system.startswith(SYSTEM) and "[guide.md] Errors are lines" in system
        request = [m for m in call.messages if isinstance(m, UserMessage)][-1]
        assert request.content.endswith(REQUEST) and "[format.md]" in request.content
    assert "Pages read so far" in str(model.calls[-1].messages[0])


async def test_the_context_builder_is_on_by_default_and_can_be_turned_off() -> None:
    for context in (None, False):
        model = ScriptedModel([tool_call("read_page", page=0), "done"])
        graph = agent_graph(model, log_tools(), context=context).compile()
        result = await graph.run({"messages": conversation(REQUEST)})
        assert result.state.output == "done"
        sent = model.calls[1].messages
        assert [m.role for m in sent] == ["user", "assistant", "tool"]  # no empty system prompt
        if context is False:
            assert sent == tuple(result.state.messages[:3])  # unchanged, tool output uncapped
        else:
            assert isinstance(sent[-1], ToolMessage)
            assert "characters omitted" in sent[-1].content  # capped at 400 tokens
            assert await model.count_tokens([sent[-1]]) < 450


async def test_a_builder_that_leaves_too_little_room_for_the_answer_is_refused() -> None:
    model = ScriptedModel([])
    builder = ContextBuilder(model, context_window=1000, reserve_output=100)
    with pytest.raises(ConfigError, match="max_tokens"):
        agent_graph(model, context=builder, settings=ModelSettings(max_tokens=300))


@pytest.mark.slow
async def test_the_local_model_never_gets_a_request_over_its_2048_token_window() -> None:
    model = LlamaCppModel(context_size=2048, threads=1, max_tokens=48)
    try:
        builder = ContextBuilder(
            model,
            reserve_output=64,
            tool_result_max_tokens=250,
            summarizer=Summarizer(model, max_tokens=48),
        )
        history: list[Message] = [SystemMessage(content="You answer questions about harbours.")]
        for i in range(12):
            history.append(UserMessage(content=f"Tell me about harbour {i}. " + "Tides. " * 40))
            history.append(AssistantMessage(parts=(TextPart(text=f"Harbour {i} is busy. " * 20),)))
        history.append(UserMessage(content="Which harbour has the most ships?"))
        for i in range(3):
            call = ToolCallPart(id=f"c{i}", name="read_page", arguments={"page": i})
            history.append(AssistantMessage(parts=(call,)))
            content = f"Harbour {i} manifest: " + "ship arrived; " * 600
            history.append(ToolMessage(tool_call_id=f"c{i}", name="read_page", content=content))
        assert await model.count_tokens(history) > 4 * 2048

        graph = agent_graph(model, log_tools(), max_turns=3, context=builder)
        prompts: list[int] = []  # llama.cpp's own prompt token count of each request
        seen = 0
        async for event in graph.compile().stream({"messages": history}):
            if event.kind == "state" and event.data.usage.input_tokens != seen:
                prompts.append(event.data.usage.input_tokens - seen)
                seen = event.data.usage.input_tokens
            if event.kind == "run_finished":
                state = event.data.state

        assert state.errors == [], state.errors
        assert state.stopped in ("answer", "max_turns")
        assert len(prompts) == state.turns == state.usage.requests >= 1
        assert all(0 < p <= 2048 - 64 for p in prompts), prompts
        assert state.summary.covered > 0
    finally:
        await model.aclose()
