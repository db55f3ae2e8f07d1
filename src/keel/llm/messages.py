"""Neutral message types shared by every model backend.

A conversation is a list of messages; an assistant message is a list of parts (text and tool
calls). Backends map these to their wire format and back; nothing above the LLM layer sees a
provider's own types.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AssistantMessage",
    "Message",
    "ModelSettings",
    "Part",
    "Provenance",
    "Response",
    "ResponseDone",
    "Source",
    "StreamEvent",
    "SystemMessage",
    "TextDelta",
    "TextPart",
    "ToolCallDelta",
    "ToolCallPart",
    "ToolDefinition",
    "ToolMessage",
    "Usage",
    "UserMessage",
]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


SourceKind = Literal["system", "developer", "user", "tool", "document", "web", "agent"]
_TRUSTED_KINDS = frozenset({"system", "developer", "user"})


class Source(_Frozen):
    """Where a piece of content came from: its kind, and which one (tool, document, URL, agent).

    ``name`` is the tool name, document id, URL or agent name; ``ref`` the tool call id or chunk.
    System, developer and user (the authenticated user's own request) sources are trusted; the
    rest are not, unless ``trusted`` says otherwise (e.g. a tool whose output the developer
    vouches for).
    """

    kind: SourceKind
    name: str = ""
    ref: str = ""
    trusted: bool | None = None

    @property
    def is_trusted(self) -> bool:
        return self.trusted if self.trusted is not None else self.kind in _TRUSTED_KINDS

    def __str__(self) -> str:
        where = f":{self.name}" if self.name else ""
        return f"{self.kind}{where}" + (f"#{self.ref}" if self.ref else "")


class Provenance(_Frozen):
    """A trust label: the sources a value came from. Trusted only if every source is.

    Labels are data (they survive checkpoints as JSON); ``keel.guard`` computes and enforces
    them. A value computed from several labelled values carries ``join`` of their labels.
    """

    sources: tuple[Source, ...] = ()

    @property
    def trusted(self) -> bool:
        return all(s.is_trusted for s in self.sources)

    @property
    def untrusted_sources(self) -> tuple[Source, ...]:
        return tuple(s for s in self.sources if not s.is_trusted)

    def join(self, *others: Provenance) -> Provenance:
        """The label of a value derived from this one and ``others``: every source, once."""
        sources = dict.fromkeys(self.sources)
        for other in others:
            sources.update(dict.fromkeys(other.sources))
        return self if len(sources) == len(self.sources) else Provenance(sources=tuple(sources))

    def __str__(self) -> str:
        trust = "trusted" if self.trusted else "untrusted"
        return f"{trust}({', '.join(str(s) for s in self.sources)})"


class TextPart(_Frozen):
    """Plain text produced by the model."""

    kind: Literal["text"] = "text"
    text: str
    provenance: Provenance | None = None
    """Trust label; None derives it from the role (``keel.guard.provenance_of``)."""


class ToolCallPart(_Frozen):
    """A request by the model to call a tool; ``arguments`` are not yet validated."""

    kind: Literal["tool_call"] = "tool_call"
    id: str
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    provenance: Provenance | None = None
    """Trust label; None derives it from the role (``keel.guard.provenance_of``)."""


Part = Annotated[TextPart | ToolCallPart, Field(discriminator="kind")]


class SystemMessage(_Frozen):
    role: Literal["system"] = "system"
    content: str
    provenance: Provenance | None = None
    """Trust label; None derives it from the role (``keel.guard.provenance_of``)."""


class UserMessage(_Frozen):
    role: Literal["user"] = "user"
    content: str
    provenance: Provenance | None = None
    """Trust label; None derives it from the role (``keel.guard.provenance_of``)."""


class AssistantMessage(_Frozen):
    role: Literal["assistant"] = "assistant"
    parts: tuple[Part, ...] = ()
    provenance: Provenance | None = None
    """Trust label; None derives it from the role (``keel.guard.provenance_of``)."""

    @property
    def text(self) -> str:
        """All text parts joined, in order."""
        return "".join(p.text for p in self.parts if isinstance(p, TextPart))

    @property
    def tool_calls(self) -> list[ToolCallPart]:
        return [p for p in self.parts if isinstance(p, ToolCallPart)]


class ToolMessage(_Frozen):
    """The result of one tool call, sent back to the model."""

    role: Literal["tool"] = "tool"
    tool_call_id: str
    name: str
    content: str
    is_error: bool = False
    provenance: Provenance | None = None
    """Trust label; None derives it from the role (``keel.guard.provenance_of``)."""


Message = Annotated[
    SystemMessage | UserMessage | AssistantMessage | ToolMessage, Field(discriminator="role")
]


class Usage(_Frozen):
    """Tokens consumed by one or more model calls."""

    input_tokens: int = 0
    output_tokens: int = 0
    requests: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            requests=self.requests + other.requests,
        )


class ToolDefinition(_Frozen):
    """What a model is told about a tool: its name, purpose and JSON schema of arguments."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})
    examples: tuple[dict[str, Any], ...] = Field(
        (), description="example argument objects, shown to models that need few-shot help"
    )


class ModelSettings(_Frozen):
    """Per-call sampling settings; ``None`` means the backend's default."""

    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    seed: int | None = None
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    stop: tuple[str, ...] = ()


class Response(_Frozen):
    """One model answer."""

    message: AssistantMessage
    usage: Usage = Usage()
    model_name: str
    finish_reason: str = "stop"


class TextDelta(_Frozen):
    kind: Literal["text_delta"] = "text_delta"
    text: str


class ToolCallDelta(_Frozen):
    """A complete tool call, or a fragment of its JSON arguments, as it streams."""

    kind: Literal["tool_call_delta"] = "tool_call_delta"
    index: int
    id: str | None = None
    name: str | None = None
    arguments_delta: str = ""


class ResponseDone(_Frozen):
    """The last event of a stream: the whole response, usage included."""

    kind: Literal["done"] = "done"
    response: Response


StreamEvent = Annotated[TextDelta | ToolCallDelta | ResponseDone, Field(discriminator="kind")]
