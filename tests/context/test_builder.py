"""ContextBuilder on test doubles: priorities, edges, sliding window, incremental summaries."""

import pytest

from keel.context import ContextBuilder, RetrievedItem, Summarizer, Summary, split_edges
from keel.errors import ConfigError, ContextOverflowError
from keel.llm import (
    AssistantMessage,
    Message,
    SystemMessage,
    TextPart,
    ToolCallPart,
    ToolMessage,
    UserMessage,
)
from keel.llm.testing import FunctionModel, ModelCall, ScriptedModel


def turns(n: int, words: int = 40, tag: str = "") -> list[Message]:
    history: list[Message] = []
    for i in range(n):
        history.append(UserMessage(content=f"question {tag}{i} " + "lorem " * words))
        text = f"answer {tag}{i} " + "ipsum " * words
        history.append(AssistantMessage(parts=(TextPart(text=text),)))
    return history


def test_edges_put_the_best_items_first_and_last() -> None:
    items = [RetrievedItem(f"doc{r}", score=1 - r / 10) for r in range(1, 7)]
    start, end = split_edges(items)
    assert [i.text for i in start] == ["doc1", "doc3", "doc5"]
    assert [i.text for i in end] == ["doc6", "doc4", "doc2"]


async def test_memory_goes_to_both_edges_around_the_history() -> None:
    builder = ContextBuilder(ScriptedModel([]), context_window=4000, reserve_output=100)
    memory = [RetrievedItem(f"fact number {r}", score=10 - r) for r in range(1, 5)]
    history = [*turns(2, words=5), UserMessage(content="the question")]
    built = await builder.build("You help.", history, memory=memory)
    first, last = built.messages[0], built.messages[-1]
    assert isinstance(first, SystemMessage) and isinstance(last, UserMessage)
    assert first.content.index("fact number 1") < first.content.index("fact number 3")
    assert "fact number 2" in last.content and "fact number 4" in last.content
    assert last.content.index("fact number 4") < last.content.index("fact number 2")
    assert last.content.endswith("the question")
    middle = " ".join(m.content for m in built.messages[1:-1] if isinstance(m, UserMessage))
    assert "fact number" not in middle
    assert built.memory_kept == 4


async def test_long_history_slides_and_stays_under_budget() -> None:
    builder = ContextBuilder(ScriptedModel([]), context_window=1024, reserve_output=200)
    history = [*turns(50), UserMessage(content="latest question")]
    built = await builder.build("You help.", history)
    assert built.tokens <= builder.budget
    assert built.history_dropped > 0
    assert built.messages[-1] == UserMessage(content="latest question")
    kept = [m for m in built.messages[1:-1]]
    assert kept == history[len(history) - 1 - len(kept) : -1]  # the newest turns, in order


async def test_tool_results_are_capped_and_orphans_never_open_the_window() -> None:
    call = ToolCallPart(id="c1", name="search", arguments={"q": "x"})
    history: list[Message] = [
        *turns(30),
        AssistantMessage(parts=(call,)),
        ToolMessage(tool_call_id="c1", name="search", content="HEAD " + "data " * 5000 + " TAIL"),
    ]
    builder = ContextBuilder(
        ScriptedModel([]), context_window=2048, reserve_output=256, tool_result_max_tokens=300
    )
    built = await builder.build("You help.", history)
    assert built.tokens <= builder.budget
    assert built.tool_results_truncated == 1
    tool = built.messages[-1]
    assert isinstance(tool, ToolMessage)
    assert tool.content.startswith("HEAD") and tool.content.endswith("TAIL")
    assert not isinstance(built.messages[1], ToolMessage)


async def test_dropped_turns_are_summarised_incrementally() -> None:
    def summarise(call: ModelCall) -> str:
        return f"summary number {len(model.calls)}"

    model = FunctionModel(summarise, name="summariser")
    builder = ContextBuilder(
        ScriptedModel([]),
        context_window=1200,
        reserve_output=200,
        summarizer=Summarizer(model, max_tokens=60),
    )
    history = [*turns(20), UserMessage(content="q1")]
    first = await builder.build("You help.", history)
    assert first.summary.covered > 0
    assert len(model.calls) == 1
    assert first.tokens <= builder.budget
    assert "Summary of the earlier conversation" in first.messages[0].content  # type: ignore[union-attr]

    # One more short turn fits in the slack: no new summary call.
    history = [
        *history[:-1],
        UserMessage(content="q1"),
        AssistantMessage(parts=(TextPart(text="a"),)),
        UserMessage(content="q2"),
    ]
    second = await builder.build("You help.", history, summary=first.summary)
    assert len(model.calls) == 1
    assert second.summary == first.summary

    # Many more turns: only the newly dropped ones go to the summariser, with the old summary.
    history = [*history[:-1], *turns(10, tag="late"), UserMessage(content="q3")]
    third = await builder.build("You help.", history, summary=second.summary)
    assert len(model.calls) == 2
    assert third.summary.covered > second.summary.covered
    sent = model.calls[1].last_user_text
    assert first.summary.text in sent
    assert "summary number 1" in sent
    assert "question 0 " not in sent  # already covered by the first summary
    assert "question late0 " in sent


async def test_a_request_that_cannot_fit_is_a_typed_error() -> None:
    builder = ContextBuilder(ScriptedModel([]), context_window=300, reserve_output=100)
    with pytest.raises(ContextOverflowError, match="no room is left"):
        await builder.build("rules " * 400, [UserMessage(content="hi")])
    built = await builder.build("You help.", [UserMessage(content="long " * 2000)])
    assert built.tokens <= builder.budget
    assert "omitted" in built.messages[-1].content  # type: ignore[union-attr]


def test_a_model_without_a_known_window_needs_one() -> None:
    with pytest.raises(ConfigError, match="context window"):
        ContextBuilder(ScriptedModel([]))


async def test_the_summary_state_must_match_the_history() -> None:
    builder = ContextBuilder(ScriptedModel([]), context_window=1000)
    with pytest.raises(ConfigError, match="covers more"):
        await builder.build("s", [UserMessage(content="x")], summary=Summary("s", covered=5))
