"""A registry of typed Python functions that a model may call.

A tool's JSON schema comes from its type hints and docstring; each tool has a name, a version and
a schema hash. A call is validated before the handler runs, and every failure (unknown tool, bad
arguments, a handler that raised or timed out) comes back as a ``ToolResult`` with a structured
error the model can read, never as an exception that ends the run.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, overload

from opentelemetry import trace
from opentelemetry.trace import StatusCode
from pydantic import BaseModel, ValidationError

from keel.errors import ToolNotFoundError
from keel.llm.messages import ToolCallPart, ToolDefinition, ToolMessage
from keel.observe import semconv as sc
from keel.tools.schema import arguments_model, parse_docstring

__all__ = ["Tool", "ToolRegistry", "ToolResult"]

_tracer = trace.get_tracer("keel.tools")
_NAME_OK = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


@dataclass(frozen=True)
class Tool:
    """A registered function, with what a model needs to call it."""

    name: str
    description: str
    version: str
    arguments: type[BaseModel]
    handler: Callable[..., Any]
    examples: tuple[dict[str, Any], ...] = ()
    timeout: float | None = None

    @property
    def parameters(self) -> dict[str, Any]:
        """The JSON schema of the arguments."""
        schema = self.arguments.model_json_schema()
        schema.pop("title", None)
        for prop in schema.get("properties", {}).values():
            prop.pop("title", None)
        return schema

    @property
    def schema_hash(self) -> str:
        """A short hash of name, version and schema: changes whenever the contract does."""
        canonical = json.dumps([self.name, self.version, self.parameters], sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def definition(self) -> ToolDefinition:
        return ToolDefinition(
            name=self.name,
            description=self.description,
            parameters=self.parameters,
            examples=self.examples,
        )


@dataclass(frozen=True)
class ToolResult:
    """The outcome of one call; ``error`` is set (and ``value`` is None) when it failed."""

    call_id: str
    name: str
    value: Any = None
    error: dict[str, str] | None = None
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None

    def content(self) -> str:
        """The result as text for the model: the value (JSON where possible) or the error."""
        if self.error is not None:
            return json.dumps({"error": self.error})
        if isinstance(self.value, str):
            return self.value
        if isinstance(self.value, BaseModel):
            return self.value.model_dump_json()
        try:
            return json.dumps(self.value, default=str)
        except (TypeError, ValueError):
            return str(self.value)

    def to_message(self) -> ToolMessage:
        return ToolMessage(
            tool_call_id=self.call_id, name=self.name, content=self.content(), is_error=not self.ok
        )


class ToolRegistry:
    """Tools by name. Register with ``@registry.tool`` or ``registry.register(fn)``."""

    def __init__(self) -> None:
        self._tools: dict[str, Tool] = {}

    @overload
    def tool(self, function: Callable[..., Any], /) -> Callable[..., Any]: ...
    @overload
    def tool(
        self,
        *,
        name: str | None = None,
        version: str = "1",
        description: str | None = None,
        examples: Iterable[Mapping[str, Any]] = (),
        timeout: float | None = None,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]: ...

    def tool(
        self,
        function: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        version: str = "1",
        description: str | None = None,
        examples: Iterable[Mapping[str, Any]] = (),
        timeout: float | None = None,
    ) -> Any:
        """Decorator form of ``register``; returns the function unchanged."""

        def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
            self.register(
                fn,
                name=name,
                version=version,
                description=description,
                examples=examples,
                timeout=timeout,
            )
            return fn

        return decorate if function is None else decorate(function)

    def register(
        self,
        function: Callable[..., Any],
        *,
        name: str | None = None,
        version: str = "1",
        description: str | None = None,
        examples: Iterable[Mapping[str, Any]] = (),
        timeout: float | None = None,
    ) -> Tool:
        """Add ``function`` as a tool; raises ``ValueError`` on a duplicate or bad name."""
        tool_name = name or function.__name__
        if not tool_name or not set(tool_name) <= _NAME_OK or len(tool_name) > 64:
            raise ValueError(f"tool name {tool_name!r}: use 1-64 letters, digits, '_' or '-'")
        if tool_name in self._tools:
            raise ValueError(f"a tool named {tool_name!r} is already registered")
        arguments = arguments_model(function, f"{tool_name}_arguments")
        summary, _ = parse_docstring(function.__doc__)
        checked = tuple(arguments.model_validate(ex).model_dump(mode="json") for ex in examples)
        tool = Tool(
            name=tool_name,
            description=description if description is not None else summary,
            version=version,
            arguments=arguments,
            handler=function,
            examples=checked,
            timeout=timeout,
        )
        self._tools[tool_name] = tool
        return tool

    def get(self, name: str) -> Tool:
        try:
            return self._tools[name]
        except KeyError:
            raise ToolNotFoundError(self._unknown(name)) from None

    def _unknown(self, name: str) -> str:
        return f"no tool named {name!r}; available: {', '.join(sorted(self._tools)) or 'none'}"

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __len__(self) -> int:
        return len(self._tools)

    def definitions(self) -> list[ToolDefinition]:
        return [t.definition() for t in self._tools.values()]

    async def call(self, call: ToolCallPart) -> ToolResult:
        """Validate and run one call; every failure becomes a structured error in the result."""
        with _tracer.start_as_current_span(f"execute_tool {call.name}") as span:
            span.set_attribute(sc.GEN_AI_OPERATION_NAME, sc.OPERATION_EXECUTE_TOOL)
            span.set_attribute(sc.GEN_AI_TOOL_NAME, call.name)
            span.set_attribute(sc.GEN_AI_TOOL_CALL_ID, call.id)
            result = await self._call(call)
            if result.error is not None:
                span.set_attribute(sc.ERROR_TYPE, result.error["type"])
                span.set_status(StatusCode.ERROR, result.error["message"][:200])
            return result

    async def _call(self, call: ToolCallPart) -> ToolResult:
        start = time.perf_counter()

        def failed(kind: str, message: str) -> ToolResult:
            error = {"type": kind, "message": message}
            return ToolResult(call.id, call.name, error=error, duration_s=_since(start))

        tool = self._tools.get(call.name)
        if tool is None:
            return failed("unknown_tool", self._unknown(call.name))
        trace.get_current_span().set_attribute(sc.KEEL_TOOL_VERSION, tool.version)
        try:
            arguments = tool.arguments.model_validate(call.arguments)
        except ValidationError as e:
            return failed("invalid_arguments", _describe(e))
        kwargs = {name: getattr(arguments, name) for name in type(arguments).model_fields}
        try:
            if inspect.iscoroutinefunction(tool.handler):
                pending = tool.handler(**kwargs)
            else:
                pending = asyncio.to_thread(tool.handler, **kwargs)
            value = await asyncio.wait_for(pending, tool.timeout)
        except TimeoutError:
            return failed("timeout", f"{tool.name} did not finish within {tool.timeout} s")
        except Exception as e:
            return failed("tool_error", f"{type(e).__name__}: {e}")
        return ToolResult(call.id, call.name, value=value, duration_s=_since(start))


def _since(start: float) -> float:
    return time.perf_counter() - start


def _describe(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}" for e in error.errors()
    )
