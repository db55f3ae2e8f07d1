"""AnthropicModel's mapping of the Messages API, against recorded responses (no network).

The responses in ``recorded/`` follow Anthropic's documented wire format; httpx's
``MockTransport`` serves them to the real ``anthropic`` SDK and records what Keel sent.
"""

import json
from pathlib import Path
from typing import Any

import httpx2
import pytest
from pydantic import BaseModel

from keel.config import LLMSettings
from keel.errors import ConfigError, ModelRequestError, ModelUnavailableError, RateLimitError
from keel.llm import (
    AssistantMessage,
    ModelSettings,
    ResponseDone,
    SystemMessage,
    TextDelta,
    TextPart,
    ToolCallDelta,
    ToolCallPart,
    ToolDefinition,
    ToolMessage,
    UserMessage,
    create_model,
    request_structured,
)
from keel.llm.anthropic import AnthropicModel
from keel.llm.provider import anthropic_provider

RECORDED = Path(__file__).parent / "recorded"
WEATHER = ToolDefinition(
    name="get_weather",
    description="Weather for a city",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}},
)
KEY = "sk-ant-test-secret-456"


def serve(
    body: bytes, *, status: int = 200, content_type: str = "application/json", headers: Any = None
) -> tuple[httpx2.AsyncClient, list[httpx2.Request]]:
    sent: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        sent.append(request)
        return httpx2.Response(
            status, content=body, headers={"content-type": content_type, **(headers or {})}
        )

    return httpx2.AsyncClient(transport=httpx2.MockTransport(handler)), sent


def claude(client: httpx2.AsyncClient, **kwargs: Any) -> AnthropicModel:
    return AnthropicModel(
        "claude-sonnet-5-5",
        anthropic_provider(api_key=KEY),
        http_client=client,
        **kwargs,
    )


async def test_parallel_tool_use_blocks_map_to_tool_calls() -> None:
    client, sent = serve((RECORDED / "anthropic_parallel_tool_use.json").read_bytes())
    messages = [SystemMessage(content="Be brief."), UserMessage(content="Paris and Rome?")]
    response = await claude(client).request(
        messages, tools=[WEATHER], settings=ModelSettings(max_tokens=300, stop=("END",))
    )
    assert response.message.text == "I'll check both cities."
    assert [(c.name, c.arguments) for c in response.message.tool_calls] == [
        ("get_weather", {"city": "Paris"}),
        ("get_weather", {"city": "Rome"}),
    ]
    assert response.finish_reason == "tool_calls"
    assert (response.usage.input_tokens, response.usage.output_tokens) == (412, 98)
    body = json.loads(sent[0].content)
    assert body["system"] == "Be brief."
    assert body["max_tokens"] == 300
    assert body["stop_sequences"] == ["END"]
    assert body["tools"] == [
        {
            "name": "get_weather",
            "description": "Weather for a city",
            "input_schema": WEATHER.parameters,
        }
    ]
    credentials = sent[0].headers.get("x-api-key") or sent[0].headers["authorization"]
    assert credentials.endswith(KEY)


async def test_tool_results_share_one_user_turn() -> None:
    client, sent = serve((RECORDED / "anthropic_parallel_tool_use.json").read_bytes())
    calls = (
        ToolCallPart(id="t1", name="get_weather", arguments={"city": "Paris"}),
        ToolCallPart(id="t2", name="get_weather", arguments={"city": "Rome"}),
    )
    messages = [
        UserMessage(content="Paris and Rome?"),
        AssistantMessage(parts=(TextPart(text="Checking."), *calls)),
        ToolMessage(tool_call_id="t1", name="get_weather", content="sun"),
        ToolMessage(tool_call_id="t2", name="get_weather", content="boom", is_error=True),
    ]
    await claude(client).request(messages, tools=[WEATHER])
    turns = json.loads(sent[0].content)["messages"]
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]
    assert turns[1]["content"][1] == {
        "type": "tool_use",
        "id": "t1",
        "name": "get_weather",
        "input": {"city": "Paris"},
    }
    assert [b["tool_use_id"] for b in turns[2]["content"]] == ["t1", "t2"]
    assert turns[2]["content"][1]["is_error"] is True


async def test_stream_events_map_to_text_and_tool_call_deltas() -> None:
    client, _ = serve(
        (RECORDED / "anthropic_tool_use_stream.sse").read_bytes(),
        content_type="text/event-stream",
    )
    events = [e async for e in claude(client).stream([UserMessage(content="x")], tools=[WEATHER])]
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert text == "Let me check the weather."
    deltas = [e for e in events if isinstance(e, ToolCallDelta)]
    assert [d.name for d in deltas if d.name] == ["get_weather", "get_weather"]
    assert "".join(d.arguments_delta for d in deltas if d.index == 1) == '{"city": "Rome"}'
    done = events[-1]
    assert isinstance(done, ResponseDone)
    assert [c.arguments for c in done.response.message.tool_calls] == [
        {"city": "Paris"},
        {"city": "Rome"},
    ]
    assert (done.response.usage.input_tokens, done.response.usage.output_tokens) == (472, 89)
    assert done.response.finish_reason == "tool_calls"


async def test_a_stream_cut_before_message_stop_is_a_retryable_error() -> None:
    whole = (RECORDED / "anthropic_tool_use_stream.sse").read_bytes()
    client, _ = serve(whole[: len(whole) // 2], content_type="text/event-stream")
    with pytest.raises(ModelUnavailableError):
        async for _ in claude(client).stream([UserMessage(content="x")]):
            pass


class City(BaseModel):
    name: str
    population: int


async def test_structured_output_native_and_tool_modes() -> None:
    client, sent = serve((RECORDED / "anthropic_structured_tool.json").read_bytes())
    result = await request_structured(
        claude(client, structured="tool"), [UserMessage(content="A city")], City
    )
    assert result.output == City(name="Lyon", population=522000)
    assert result.response.finish_reason == "stop"
    body = json.loads(sent[0].content)
    assert body["tool_choice"] == {"type": "tool", "name": "final_output"}

    client, sent = serve((RECORDED / "anthropic_structured_tool.json").read_bytes())
    await claude(client).request([UserMessage(content="A city")], output_schema={"type": "object"})
    body = json.loads(sent[0].content)
    assert body["output_config"] == {
        "format": {"type": "json_schema", "schema": {"type": "object"}}
    }
    assert "tools" not in body


async def test_errors_are_typed_and_never_carry_the_key() -> None:
    overloaded = b'{"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}'
    client, _ = serve(overloaded, status=529)
    with pytest.raises(ModelUnavailableError) as caught:
        await claude(client).request([UserMessage(content="x")])
    assert caught.value.status == 529

    client, _ = serve(b'{"error": {"message": "slow"}}', status=429, headers={"retry-after": "2"})
    with pytest.raises(RateLimitError) as limited:
        await claude(client).request([UserMessage(content="x")])
    assert limited.value.retry_after == 2.0

    denied = json.dumps({"error": {"message": f"invalid x-api-key {KEY}"}}).encode()
    client, _ = serve(denied, status=401)
    with pytest.raises(ModelRequestError) as refused:
        await claude(client).request([UserMessage(content="x")])
    assert "ANTHROPIC_API_KEY" in str(refused.value) and KEY not in str(refused.value)


def test_model_string_needs_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="ANTHROPIC_API_KEY"):
        create_model(LLMSettings(), "anthropic:claude-sonnet-5-5")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-env")
    model = create_model(LLMSettings(), "anthropic:claude-sonnet-5-5")
    assert isinstance(model, AnthropicModel) and model.name == "claude-sonnet-5-5"
