"""The public test doubles behave as documented: scripts in order, calls recorded, misuse fails."""

import pytest

from keel.errors import UnexpectedModelBehavior
from keel.llm import AssistantMessage, TextPart, ToolCallPart, UserMessage
from keel.llm.testing import FunctionModel, ModelCall, ScriptedModel, Step, tool_call


async def test_scripted_model_replies_in_order_and_records_calls() -> None:
    model = ScriptedModel(["first", tool_call("search", query="venus"), "third"])
    r1 = await model.request([UserMessage(content="a")])
    r2 = await model.request([UserMessage(content="b")])
    r3 = await model.request([UserMessage(content="c")])
    assert r1.message.text == "first"
    assert r2.message.tool_calls[0].name == "search"
    assert r2.message.tool_calls[0].arguments == {"query": "venus"}
    assert r2.finish_reason == "tool_calls"
    assert r3.message.text == "third"
    assert [c.last_user_text for c in model.calls] == ["a", "b", "c"]
    model.assert_done()


async def test_scripted_model_fails_on_a_call_past_the_script() -> None:
    model = ScriptedModel(["only"])
    await model.request([UserMessage(content="a")])
    with pytest.raises(UnexpectedModelBehavior, match="call 2 but the script has 1 steps"):
        await model.request([UserMessage(content="b")])


async def test_scripted_model_fails_on_unused_steps() -> None:
    model = ScriptedModel(["a", "b"])
    with pytest.raises(UnexpectedModelBehavior, match="1 of 2 steps were never used"), model:
        await model.request([UserMessage(content="x")])


async def test_scripted_step_expectation_rejects_an_unexpected_call() -> None:
    model = ScriptedModel([Step("ok", expect=lambda call: "venus" in call.last_user_text)])
    with pytest.raises(UnexpectedModelBehavior, match="did not expect"):
        await model.request([UserMessage(content="mars")])


async def test_scripted_step_can_raise_and_carry_parallel_calls() -> None:
    calls = [ToolCallPart(id="1", name="a"), ToolCallPart(id="2", name="b")]
    model = ScriptedModel([RuntimeError("boom"), calls])
    with pytest.raises(RuntimeError, match="boom"):
        await model.request([UserMessage(content="x")])
    response = await model.request([UserMessage(content="y")])
    assert [c.name for c in response.message.tool_calls] == ["a", "b"]


async def test_scripted_model_stream_replays_the_reply() -> None:
    model = ScriptedModel(["hello"])
    events = [e async for e in model.stream([UserMessage(content="x")])]
    assert [e.kind for e in events] == ["text_delta", "done"]
    assert events[-1].response.message.text == "hello"  # type: ignore[union-attr]


async def test_function_model_sync_and_async() -> None:
    def echo(call: ModelCall) -> str:
        return call.last_user_text.upper()

    async def message(call: ModelCall) -> AssistantMessage:
        return AssistantMessage(parts=(TextPart(text=f"{len(call.messages)} messages"),))

    assert (await FunctionModel(echo).request([UserMessage(content="hi")])).message.text == "HI"
    model = FunctionModel(message)
    response = await model.request([UserMessage(content="a"), UserMessage(content="b")])
    assert response.message.text == "2 messages"
    assert len(model.calls) == 1
