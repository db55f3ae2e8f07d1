"""Anthropic's Messages API on the official ``anthropic`` SDK.

System messages go to the ``system`` parameter; tool calls are ``tool_use`` blocks and tool
results ``tool_result`` blocks inside a user turn (consecutive results share one turn, as the
API requires alternating roles). Structured output uses the API's native JSON-schema output
format (``output_config.format``) by default, or a forced tool call (``structured="tool"``) for
schemas the native mode does not accept. As for OpenAI, the SDK's retries are off and failures
become typed Keel errors.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any, Literal

from keel.errors import ConfigError, MissingDependencyError, ModelUnavailableError
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
from keel.llm.provider import Provider, anthropic_provider
from keel.llm.sdk_errors import map_sdk_error

try:
    import anthropic
    import httpx2
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError("anthropic", "anthropic", feature="Anthropic models") from e

if TYPE_CHECKING:
    from keel.config import LLMSettings

__all__ = ["AnthropicModel", "from_spec", "messages_to_anthropic"]

_OUTPUT_TOOL = "final_output"
_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "tool_use": "tool_calls"}


def messages_to_anthropic(messages: Sequence[Message]) -> tuple[str, list[dict[str, Any]]]:
    """(system text, messages) in the Messages API's shape, same-role turns merged."""
    system: list[str] = []
    turns: list[dict[str, Any]] = []

    def add(role: str, blocks: list[dict[str, Any]]) -> None:
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})

    for m in messages:
        if isinstance(m, SystemMessage):
            system.append(m.content)
        elif isinstance(m, UserMessage):
            add("user", [{"type": "text", "text": m.content}])
        elif isinstance(m, AssistantMessage):
            blocks: list[dict[str, Any]] = []
            if m.text:
                blocks.append({"type": "text", "text": m.text})
            blocks += [
                {"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments}
                for c in m.tool_calls
            ]
            add("assistant", blocks or [{"type": "text", "text": ""}])
        elif isinstance(m, ToolMessage):
            result = {
                "type": "tool_result",
                "tool_use_id": m.tool_call_id,
                "content": m.content,
                "is_error": m.is_error,
            }
            add("user", [result])
    return "\n\n".join(system), turns


def _usage(raw: Any) -> Usage:
    return Usage(
        input_tokens=getattr(raw, "input_tokens", 0) or 0,
        output_tokens=getattr(raw, "output_tokens", 0) or 0,
        requests=1,
    )


class AnthropicModel(Model):
    """A Claude model behind the Messages API (``client`` may be handed in, e.g. for tests)."""

    def __init__(
        self,
        model_name: str,
        provider: Provider | None = None,
        *,
        client: anthropic.AsyncAnthropic | None = None,
        http_client: httpx2.AsyncClient | None = None,
        max_tokens: int = 1024,
        structured: Literal["native", "tool"] = "native",
        context_window: int | None = None,
    ) -> None:
        if not model_name:
            raise ConfigError("an Anthropic model needs a model name, e.g. anthropic:claude-...")
        self.model_name = model_name
        self.provider = provider or anthropic_provider()
        self.max_tokens = max_tokens
        self.structured = structured
        self._context_window = context_window
        self._client = client or anthropic.AsyncAnthropic(
            api_key=self.provider.require_api_key(),
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
        s = settings or ModelSettings()
        system, turns = messages_to_anthropic(messages)
        kwargs: dict[str, Any] = {
            "model": self.model_name,
            "messages": turns,
            "max_tokens": s.max_tokens or self.max_tokens,
        }
        if system:
            kwargs["system"] = system
        if s.stop:
            kwargs["stop_sequences"] = list(s.stop)
        if s.temperature is not None:
            # Not a named parameter of this SDK version; sent as given.
            kwargs["extra_body"] = {"temperature": s.temperature}
        wire_tools = [
            {"name": t.name, "description": t.description, "input_schema": t.parameters}
            for t in tools
        ]
        if output_schema is not None and self.structured == "native":
            kwargs["output_config"] = {"format": {"type": "json_schema", "schema": output_schema}}
        elif output_schema is not None:
            wire_tools.append(
                {
                    "name": _OUTPUT_TOOL,
                    "description": "Give the final answer in the required structure.",
                    "input_schema": output_schema,
                }
            )
            if not tools:
                kwargs["tool_choice"] = {"type": "tool", "name": _OUTPUT_TOOL}
        if wire_tools:
            kwargs["tools"] = wire_tools
        return kwargs

    def _parts(self, blocks: Sequence[tuple[str, Any]]) -> list[Part]:
        """Neutral parts from (kind, payload) blocks; the output tool becomes the answer text."""
        parts: list[Part] = []
        for kind, payload in blocks:
            if kind == "text" and payload:
                parts.append(TextPart(text=payload))
            elif kind == "tool_use":
                call_id, name, arguments = payload
                if name == _OUTPUT_TOOL and self.structured == "tool":
                    parts.append(TextPart(text=json.dumps(arguments)))
                else:
                    parts.append(ToolCallPart(id=call_id, name=name, arguments=arguments))
        return parts

    def _finish(self, stop_reason: str | None, parts: Sequence[Part]) -> str:
        if stop_reason == "tool_use" and not any(isinstance(p, ToolCallPart) for p in parts):
            return "stop"  # the structured-output tool: an answer, not a call
        return _FINISH.get(stop_reason or "", "length" if stop_reason == "max_tokens" else "stop")

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
            reply = await self._client.messages.create(**kwargs)
        except Exception as e:
            raise map_sdk_error(e, self.provider, anthropic) from e
        blocks: list[tuple[str, Any]] = []
        for block in reply.content:
            if block.type == "text":
                blocks.append(("text", block.text))
            elif block.type == "tool_use":
                blocks.append(("tool_use", (block.id, block.name, dict(block.input))))
        parts = self._parts(blocks)
        return Response(
            message=AssistantMessage(parts=tuple(parts)),
            usage=_usage(reply.usage),
            model_name=reply.model or self.model_name,
            finish_reason=self._finish(reply.stop_reason, parts),
        )

    async def stream(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolDefinition] = (),
        output_schema: dict[str, Any] | None = None,
        settings: ModelSettings | None = None,
    ) -> AsyncIterator[StreamEvent]:
        """Text and ``tool_use`` input fragments as they arrive, then the whole response."""
        kwargs = self._kwargs(messages, tools, output_schema, settings)
        blocks: dict[int, dict[str, Any]] = {}
        tool_index: dict[int, int] = {}
        usage = Usage(requests=1)
        stop_reason: str | None = None
        finished = False
        model_name = self.model_name
        structured_tool = self.structured == "tool" and output_schema is not None
        try:
            stream = await self._client.messages.create(**kwargs, stream=True)
            async with stream:
                async for event in stream:
                    if event.type == "message_start":
                        usage = _usage(event.message.usage)
                        model_name = event.message.model or model_name
                    elif event.type == "content_block_start":
                        block = event.content_block
                        if block.type == "tool_use":
                            blocks[event.index] = {
                                "kind": "tool_use",
                                "id": block.id,
                                "name": block.name,
                                "json": [],
                            }
                            if not (structured_tool and block.name == _OUTPUT_TOOL):
                                tool_index[event.index] = len(tool_index)
                                yield ToolCallDelta(
                                    index=tool_index[event.index], id=block.id, name=block.name
                                )
                        else:
                            blocks[event.index] = {"kind": "text", "text": []}
                    elif event.type == "content_block_delta":
                        delta = event.delta
                        slot = blocks.setdefault(event.index, {"kind": "text", "text": []})
                        if delta.type == "text_delta":
                            slot["text"].append(delta.text)
                            yield TextDelta(text=delta.text)
                        elif delta.type == "input_json_delta":
                            slot["json"].append(delta.partial_json)
                            if event.index in tool_index:
                                yield ToolCallDelta(
                                    index=tool_index[event.index],
                                    arguments_delta=delta.partial_json,
                                )
                            else:
                                yield TextDelta(text=delta.partial_json)
                    elif event.type == "message_delta":
                        stop_reason = event.delta.stop_reason or stop_reason
                        output = getattr(event.usage, "output_tokens", None)
                        if output is not None:
                            usage = Usage(
                                input_tokens=usage.input_tokens, output_tokens=output, requests=1
                            )
                    elif event.type == "message_stop":
                        finished = True
        except Exception as e:
            raise map_sdk_error(e, self.provider, anthropic) from e
        if not finished:
            raise ModelUnavailableError(
                f"the stream from {self.provider.name} ended before the message was complete"
            )
        collected: list[tuple[str, Any]] = []
        for index in sorted(blocks):
            slot = blocks[index]
            if slot["kind"] == "text":
                collected.append(("text", "".join(slot["text"])))
            else:
                raw = "".join(slot["json"]) or "{}"
                try:
                    arguments = json.loads(raw)
                except json.JSONDecodeError as e:
                    raise ModelUnavailableError(
                        f"{self.provider.name} streamed tool input that is not JSON"
                    ) from e
                collected.append(("tool_use", (slot["id"], slot["name"], arguments)))
        parts = self._parts(collected)
        yield ResponseDone(
            response=Response(
                message=AssistantMessage(parts=tuple(parts)),
                usage=usage,
                model_name=model_name,
                finish_reason=self._finish(stop_reason, parts),
            )
        )

    async def aclose(self) -> None:
        await self._client.close()


def from_spec(target: str, settings: LLMSettings) -> AnthropicModel:
    """Factory for ``anthropic:claude-...`` (key from ``ANTHROPIC_API_KEY``)."""
    return AnthropicModel(target, max_tokens=settings.max_tokens)
