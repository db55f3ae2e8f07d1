"""ContextBuilder with the real embedded model: a 2,048-token window is never exceeded."""

import asyncio

import pytest

from keel.context import ContextBuilder, RetrievedItem, Summarizer
from keel.llm import (
    AssistantMessage,
    Message,
    ModelSettings,
    TextPart,
    ToolCallPart,
    ToolDefinition,
    ToolMessage,
    UserMessage,
)
from keel.llm.local import LlamaCppModel

pytestmark = pytest.mark.slow

SEARCH = ToolDefinition(
    name="search",
    description="Search the notes",
    parameters={"type": "object", "properties": {"query": {"type": "string"}}},
)


@pytest.fixture(scope="module")
def model() -> LlamaCppModel:
    return LlamaCppModel(context_size=2048, threads=1, max_tokens=16)


def long_history() -> list[Message]:
    history: list[Message] = []
    for i in range(40):
        history.append(
            UserMessage(content=f"Tell me about harbour {i}. " + "Boats and tides. " * 20)
        )
        history.append(AssistantMessage(parts=(TextPart(text=f"Harbour {i} is busy. " * 15),)))
        if i % 10 == 9:
            call = ToolCallPart(id=f"c{i}", name="search", arguments={"query": f"harbour {i}"})
            history.append(AssistantMessage(parts=(call,)))
            output = f"Record {i}: " + "ship manifest line; " * 800
            history.append(ToolMessage(tool_call_id=f"c{i}", name="search", content=output))
    history.append(UserMessage(content="Which harbour did we discuss last? " * 3))
    return history


async def test_prompts_fit_the_2048_token_window(model: LlamaCppModel) -> None:
    builder = ContextBuilder(model, reserve_output=128, tool_result_max_tokens=300)
    assert builder.context_window == 2048
    memory = [
        RetrievedItem(f"Note {r}: " + "the pier opens at dawn. " * 25, score=-r) for r in range(12)
    ]
    args = ("You answer questions about harbours.", long_history())
    plan = "1. recall the last harbour 2. answer"
    built = await builder.build(*args, plan=plan, memory=memory)
    assert 1500 < built.tokens <= 2048 - 128  # full, yet within budget
    assert built.history_dropped > 0 and built.memory_kept > 0
    assert built.tool_results_truncated > 0
    response = await asyncio.wait_for(
        model.request(built.messages, settings=ModelSettings(max_tokens=8)), 180
    )
    assert response.usage.input_tokens == built.tokens  # the count is the model's own

    # With tools the local model's tool instructions join the prompt; the budget still holds.
    with_tools = await builder.build(*args, plan=plan, memory=memory, tools=[SEARCH])
    assert with_tools.tokens <= 2048 - 128
    assert with_tools.tokens == await model.count_tokens(with_tools.messages, tools=[SEARCH])
    assert (
        with_tools.history_kept < built.history_kept or with_tools.memory_kept < built.memory_kept
    )


async def test_real_summary_of_dropped_turns_fits(model: LlamaCppModel) -> None:
    builder = ContextBuilder(
        model,
        reserve_output=128,
        summarizer=Summarizer(model, max_tokens=48, max_input_chars=2000),
    )
    built = await builder.build("You answer questions about harbours.", long_history())
    assert built.summary.covered > 0
    assert built.summary.text.strip()
    assert built.tokens <= 2048 - 128
    assert built.tokens == await model.count_tokens(built.messages)
