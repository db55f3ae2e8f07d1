"""OpenAIModel's mapping of the chat-completions format, against recorded OpenAI responses.

The responses in ``recorded/`` follow OpenAI's documented wire format (parallel tool calls, a
streamed tool call split across chunks); httpx's ``MockTransport`` serves them to the real SDK
and records what Keel sent.
"""

import json
from pathlib import Path
from typing import Any

import httpx2
import pytest

from keel.config import LLMSettings
from keel.errors import ConfigError, ModelRequestError, RateLimitError
from keel.llm import (
    AssistantMessage,
    ModelSettings,
    ResponseDone,
    SystemMessage,
    TextPart,
    ToolCallDelta,
    ToolCallPart,
    ToolDefinition,
    ToolMessage,
    UserMessage,
    create_model,
)
from keel.llm.openai import OpenAIModel, parse_retry_after
from keel.llm.provider import Provider, compatible_provider, openai_provider

RECORDED = Path(__file__).parent / "recorded"
WEATHER = ToolDefinition(
    name="get_weather",
    description="Weather for a city",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}},
)


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


def openai_model(client: httpx2.AsyncClient, provider: Provider | None = None) -> OpenAIModel:
    return OpenAIModel(
        "gpt-4o", provider or openai_provider(api_key="sk-test-secret-123"), http_client=client
    )


async def test_parallel_tool_calls_map_to_tool_call_parts() -> None:
    client, sent = serve((RECORDED / "openai_parallel_tool_calls.json").read_bytes())
    model = openai_model(client)
    messages = [SystemMessage(content="sys"), UserMessage(content="Weather in Paris and Rome?")]
    response = await model.request(messages, tools=[WEATHER], settings=ModelSettings(max_tokens=50))
    calls = response.message.tool_calls
    assert [(c.id, c.name, c.arguments) for c in calls] == [
        ("call_paris01", "get_weather", {"city": "Paris"}),
        ("call_rome02", "get_weather", {"city": "Rome"}),
    ]
    assert response.finish_reason == "tool_calls"
    assert (response.usage.input_tokens, response.usage.output_tokens) == (82, 46)
    body = json.loads(sent[0].content)
    assert body["tools"][0]["function"]["name"] == "get_weather"
    assert body["max_completion_tokens"] == 50  # OpenAI's name for it; others use max_tokens
    assert sent[0].headers["authorization"] == "Bearer sk-test-secret-123"


async def test_tool_calls_and_results_go_back_in_native_form() -> None:
    client, sent = serve((RECORDED / "openai_parallel_tool_calls.json").read_bytes())
    model = openai_model(client)
    call = ToolCallPart(id="call_1", name="get_weather", arguments={"city": "Oslo"})
    messages = [
        UserMessage(content="Weather in Oslo?"),
        AssistantMessage(parts=(TextPart(text="Checking."), call)),
        ToolMessage(tool_call_id="call_1", name="get_weather", content="rain", is_error=False),
    ]
    await model.request(messages, tools=[WEATHER])
    wire = json.loads(sent[0].content)["messages"]
    assert wire[1]["tool_calls"][0]["function"] == {
        "name": "get_weather",
        "arguments": '{"city": "Oslo"}',
    }
    assert wire[1]["content"] == "Checking."
    assert wire[2] == {"role": "tool", "tool_call_id": "call_1", "content": "rain"}


async def test_streamed_tool_call_fragments_assemble_into_calls() -> None:
    client, sent = serve(
        (RECORDED / "openai_tool_calls_stream.sse").read_bytes(), content_type="text/event-stream"
    )
    model = openai_model(client)
    events = [
        e async for e in model.stream([UserMessage(content="Paris and Rome?")], tools=[WEATHER])
    ]
    deltas = [e for e in events if isinstance(e, ToolCallDelta)]
    assert {d.index for d in deltas} == {0, 1}
    assert "".join(d.arguments_delta for d in deltas if d.index == 0) == '{"city": "Paris"}'
    done = events[-1]
    assert isinstance(done, ResponseDone)
    assert [c.arguments for c in done.response.message.tool_calls] == [
        {"city": "Paris"},
        {"city": "Rome"},
    ]
    assert done.response.usage.output_tokens == 46
    body = json.loads(sent[0].content)
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


async def test_output_schema_becomes_native_json_schema_response_format() -> None:
    client, sent = serve((RECORDED / "openai_parallel_tool_calls.json").read_bytes())
    schema = {"title": "City", "type": "object", "properties": {"name": {"type": "string"}}}
    await openai_model(client).request([UserMessage(content="x")], output_schema=schema)
    fmt = json.loads(sent[0].content)["response_format"]
    assert fmt == {
        "type": "json_schema",
        "json_schema": {"name": "City", "schema": schema, "strict": False},
    }


async def test_a_rejected_key_names_the_variable_and_never_the_key() -> None:
    error = {"error": {"message": "Incorrect API key provided: sk-test-secret-123"}}
    client, _ = serve(json.dumps(error).encode(), status=401)
    with pytest.raises(ModelRequestError) as caught:
        await openai_model(client).request([UserMessage(content="x")])
    assert "OPENAI_API_KEY" in str(caught.value)
    assert "sk-test-secret-123" not in str(caught.value)


async def test_429_carries_retry_after() -> None:
    client, _ = serve(
        b'{"error": {"message": "slow down"}}', status=429, headers={"retry-after": "7"}
    )
    with pytest.raises(RateLimitError) as caught:
        await openai_model(client).request([UserMessage(content="x")])
    assert caught.value.retry_after == 7.0


def test_retry_after_forms() -> None:
    assert parse_retry_after(httpx2.Headers({"retry-after-ms": "1500"})) == 1.5
    assert parse_retry_after(httpx2.Headers({"retry-after": "3"})) == 3.0
    assert parse_retry_after(httpx2.Headers({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"})) == 0
    assert parse_retry_after(httpx2.Headers({})) is None


def test_openai_without_a_key_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        create_model(LLMSettings(), "openai:gpt-4o")


def test_model_strings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    gpt = create_model(LLMSettings(), "openai:gpt-4o")
    assert isinstance(gpt, OpenAIModel)
    assert (gpt.name, gpt.provider.name) == ("gpt-4o", "openai")
    assert "sk-from-env" not in repr(gpt.provider)
    vllm = create_model(LLMSettings(), "vllm:http://gpu-box:8000/v1#Qwen/Qwen2.5-7B")
    assert isinstance(vllm, OpenAIModel)
    assert (vllm.name, vllm.provider.base_url) == ("Qwen/Qwen2.5-7B", "http://gpu-box:8000/v1")
    ollama = create_model(LLMSettings(), "ollama:llama3.2")
    assert isinstance(ollama, OpenAIModel)
    assert ollama.provider.base_url == "http://localhost:11434/v1"
    monkeypatch.setenv("GEMINI_API_KEY", "g-key")
    gemini = create_model(LLMSettings(), "gemini:gemini-2.5-flash")
    assert isinstance(gemini, OpenAIModel)
    assert gemini.provider.base_url == "https://generativelanguage.googleapis.com/v1beta/openai/"
    with pytest.raises(ConfigError, match="#model-name"):
        create_model(LLMSettings(), "vllm:http://gpu-box:8000/v1")
    with pytest.raises(ConfigError, match="http://"):
        compatible_provider("gpu-box:8000")


async def test_provider_headers_are_sent() -> None:
    client, sent = serve((RECORDED / "openai_parallel_tool_calls.json").read_bytes())
    provider = compatible_provider("http://proxy.test/v1", headers={"X-Team": "keel"})
    await OpenAIModel("m", provider, http_client=client).request([UserMessage(content="x")])
    assert sent[0].headers["x-team"] == "keel"
    assert str(sent[0].url) == "http://proxy.test/v1/chat/completions"
