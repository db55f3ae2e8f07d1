"""The OpenAI chat-completions wire format on the official ``openai`` SDK, for any endpoint.

``OpenAIModel`` speaks the format; a ``Provider`` says where (OpenAI, vLLM, TGI, Ollama,
llama-server, Gemini). The SDK's own retries are off (``max_retries=0``) so that Keel's
``RetryModel`` and ``FallbackModel`` decide, without hidden waits, and every SDK or transport
failure becomes a typed Keel error: ``RateLimitError``, ``ModelTimeoutError`` and
``ModelUnavailableError`` may pass on a retry, ``ModelRequestError`` will not.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

from keel.errors import (
    ConfigError,
    MissingDependencyError,
    ModelUnavailableError,
    UnexpectedModelBehavior,
)
from keel.llm.base import Model
from keel.llm.messages import (
    AssistantMessage,
    Message,
    ModelSettings,
    Part,
    Response,
    ResponseDone,
    StreamEvent,
    SystemMessage,
    TextDelta,
    TextPart,
    ToolCallDelta,
    ToolCallPart,
    ToolDefinition,
    ToolMessage,
    Usage,
    UserMessage,
)
from keel.llm.provider import (
    OLLAMA_BASE_URL,
    Provider,
    compatible_provider,
    gemini_provider,
    ollama_provider,
    openai_provider,
)
from keel.llm.sdk_errors import map_sdk_error, parse_retry_after
from keel.llm.tokens import estimate_message_tokens, estimate_tokens, tiktoken_counter

try:
    import httpx2
    import openai
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError("openai", "openai", feature="OpenAI-compatible models") from e

if TYPE_CHECKING:
    from keel.config import LLMSettings

__all__ = [
    "OpenAIModel",
    "compatible_from_spec",
    "gemini_from_spec",
    "map_openai_error",
    "ollama_from_spec",
    "openai_from_spec",
    "parse_retry_after",
]


def map_openai_error(error: Exception, provider: Provider) -> Exception:
    """The typed Keel error for an ``openai`` SDK, transport or parsing failure."""
    return map_sdk_error(error, provider, openai)


def _tool_call_to_wire(call: ToolCallPart) -> dict[str, Any]:
    return {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
    }


def messages_to_wire(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """Neutral messages as chat-completions messages (tool calls and results natively)."""
    wire: list[dict[str, Any]] = []
    for m in messages:
        if isinstance(m, SystemMessage | UserMessage):
            wire.append({"role": m.role, "content": m.content})
        elif isinstance(m, AssistantMessage):
            item: dict[str, Any] = {"role": "assistant", "content": m.text or None}
            if m.tool_calls:
                item["tool_calls"] = [_tool_call_to_wire(c) for c in m.tool_calls]
            wire.append(item)
        elif isinstance(m, ToolMessage):
            content = f"error: {m.content}" if m.is_error else m.content
            wire.append({"role": "tool", "tool_call_id": m.tool_call_id, "content": content})
    return wire


def _parse_arguments(name: str, raw: str | None) -> dict[str, Any]:
    try:
        value = json.loads(raw or "{}")
    except json.JSONDecodeError as e:
        raise UnexpectedModelBehavior(f"the arguments of tool call {name!r} are not JSON") from e
    if not isinstance(value, dict):
        raise UnexpectedModelBehavior(f"the arguments of tool call {name!r} are not an object")
    return value


def _usage(raw: Any) -> Usage:
    if raw is None:
        return Usage(requests=1)
    return Usage(
        input_tokens=raw.prompt_tokens or 0,
        output_tokens=raw.completion_tokens or 0,
        requests=1,
    )


class OpenAIModel(Model):
    """A chat model behind the OpenAI chat-completions API, at the provider's endpoint.

    ``client`` may be handed in (an ``openai.AsyncOpenAI``), e.g. with a test transport; otherwise
    one is built from the provider, with the SDK's retries disabled.
    """

    def __init__(
        self,
        model_name: str,
        provider: Provider | None = None,
        *,
        client: openai.AsyncOpenAI | None = None,
        http_client: httpx2.AsyncClient | None = None,
        context_window: int | None = None,
        strict_schema: bool = False,
    ) -> None:
        if not model_name:
            raise ConfigError("an OpenAI-compatible model needs a model name")
        self.model_name = model_name
        self.provider = provider or openai_provider()
        self.strict_schema = strict_schema
        self._context_window = context_window
        self._client = client or openai.AsyncOpenAI(
            api_key=self.provider.require_api_key() or "EMPTY",
            base_url=self.provider.base_url,
            default_headers=dict(self.provider.headers) or None,
            timeout=self.provider.timeout,
            max_retries=0,
            http_client=http_client,
        )

    @property
    def name(self) -> str:
        return self.model_name

    @property
    def context_window(self) -> int | None:
        return self._context_window

    def _kwargs(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolDefinition],
        output_schema: dict[str, Any] | None,
        settings: ModelSettings | None,
    ) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"model": self.model_name, "messages": messages_to_wire(messages)}
        s = settings or ModelSettings()
        if s.max_tokens is not None:
            kwargs[self.provider.max_tokens_param] = s.max_tokens
        for field in ("temperature", "seed", "frequency_penalty"):
            if getattr(s, field) is not None:
                kwargs[field] = getattr(s, field)
        if s.stop:
            kwargs["stop"] = list(s.stop)
        if tools:
            kwargs["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": t.parameters,
                    },
                }
                for t in tools
            ]
        if output_schema is not None:
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {
                    "name": str(output_schema.get("title", "output"))[:64],
                    "schema": output_schema,
                    "strict": self.strict_schema,
                },
            }
        return kwargs

    async def request(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolDefinition] = (),
        output_schema: dict[str, Any] | None = None,
        settings: ModelSettings | None = None,
    ) -> Response:
        kwargs = self._kwargs(messages, tools, output_schema, settings)
        try:
            completion = await self._client.chat.completions.create(**kwargs)
        except Exception as e:
            raise map_openai_error(e, self.provider) from e
        if not isinstance(completion, openai.types.chat.ChatCompletion) or not completion.choices:
            raise ModelUnavailableError(f"{self.provider.name} sent a reply with no choices")
        choice = completion.choices[0]
        parts: list[Part] = []
        if choice.message.content:
            parts.append(TextPart(text=choice.message.content))
        for call in choice.message.tool_calls or []:
            if call.type != "function":
                continue
            parts.append(
                ToolCallPart(
                    id=call.id,
                    name=call.function.name,
                    arguments=_parse_arguments(call.function.name, call.function.arguments),
                )
            )
        return Response(
            message=AssistantMessage(parts=tuple(parts)),
            usage=_usage(completion.usage),
            model_name=completion.model or self.model_name,
            finish_reason=choice.finish_reason or "stop",
        )

    async def stream(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolDefinition] = (),
        output_schema: dict[str, Any] | None = None,
        settings: ModelSettings | None = None,
    ) -> AsyncIterator[StreamEvent]:
        """Text and tool-call argument fragments as they arrive, then the whole response.

        A stream that ends before the server sent a finish reason (a dropped or cut-off
        connection) raises ``ModelUnavailableError`` instead of passing for a short answer.
        """
        kwargs = self._kwargs(messages, tools, output_schema, settings)
        kwargs["stream"] = True
        if self.provider.stream_usage:
            kwargs["stream_options"] = {"include_usage": True}
        text: list[str] = []
        calls: dict[int, dict[str, Any]] = {}
        usage = Usage(requests=1)
        finish: str | None = None
        model_name = self.model_name
        try:
            stream = await self._client.chat.completions.create(**kwargs)
            async with stream:
                async for chunk in stream:
                    model_name = chunk.model or model_name
                    if chunk.usage is not None:
                        usage = _usage(chunk.usage)
                    for choice in chunk.choices:
                        delta = choice.delta
                        if delta.content:
                            text.append(delta.content)
                            yield TextDelta(text=delta.content)
                        for tc in delta.tool_calls or []:
                            slot = calls.setdefault(tc.index, {"id": None, "name": "", "args": []})
                            name = tc.function.name if tc.function else None
                            args = (tc.function.arguments if tc.function else None) or ""
                            slot["id"] = tc.id or slot["id"]
                            slot["name"] = name or slot["name"]
                            slot["args"].append(args)
                            yield ToolCallDelta(
                                index=tc.index, id=tc.id, name=name, arguments_delta=args
                            )
                        finish = choice.finish_reason or finish
        except Exception as e:
            raise map_openai_error(e, self.provider) from e
        if finish is None:
            raise ModelUnavailableError(
                f"the stream from {self.provider.name} ended before the model finished"
            )
        parts: list[Part] = [TextPart(text="".join(text))] if text else []
        for index in sorted(calls):
            slot = calls[index]
            parts.append(
                ToolCallPart(
                    id=slot["id"] or f"call_{index}",
                    name=slot["name"],
                    arguments=_parse_arguments(slot["name"], "".join(slot["args"])),
                )
            )
        message = AssistantMessage(parts=tuple(parts))
        yield ResponseDone(
            response=Response(
                message=message, usage=usage, model_name=model_name, finish_reason=finish
            )
        )

    async def count_text_tokens(self, text: str) -> int:
        """tiktoken's count for OpenAI models when its encodings are cached, else the estimate."""
        counter = tiktoken_counter(self.model_name) if self.provider.name == "openai" else None
        return counter(text) if counter is not None else estimate_tokens(text)

    async def count_tokens(
        self, messages: Sequence[Message], *, tools: Sequence[ToolDefinition] = ()
    ) -> int:
        counter = tiktoken_counter(self.model_name) if self.provider.name == "openai" else None
        count = counter or estimate_tokens
        extra = sum(count(json.dumps(t.model_dump())) for t in tools)
        return estimate_message_tokens(messages, count) + extra

    async def aclose(self) -> None:
        await self._client.close()


def _url_and_model(target: str, prefix: str) -> tuple[str, str]:
    url, _, model = target.partition("#")
    if not url or not model:
        raise ConfigError(
            f"cannot read {prefix}:{target!r}",
            hint=f"write '{prefix}:http://host:8000/v1#model-name'",
        )
    return url, model


def openai_from_spec(target: str, settings: LLMSettings) -> OpenAIModel:
    """Factory for ``openai:gpt-4o`` (key from ``OPENAI_API_KEY``)."""
    return OpenAIModel(target, openai_provider())


def compatible_from_spec(target: str, settings: LLMSettings) -> OpenAIModel:
    """Factory for ``vllm:URL#model`` and ``openai-compatible:URL#model``."""
    url, model = _url_and_model(target, "openai-compatible")
    return OpenAIModel(model, compatible_provider(url))


def ollama_from_spec(target: str, settings: LLMSettings) -> OpenAIModel:
    """Factory for ``ollama:llama3.2`` (local default port) or ``ollama:URL#model``."""
    if "#" in target:
        url, model = _url_and_model(target, "ollama")
        return OpenAIModel(model, ollama_provider(url))
    return OpenAIModel(target, ollama_provider(OLLAMA_BASE_URL))


def gemini_from_spec(target: str, settings: LLMSettings) -> OpenAIModel:
    """Factory for ``gemini:gemini-2.5-flash`` through Gemini's OpenAI-compatible endpoint."""
    return OpenAIModel(target, gemini_provider())
