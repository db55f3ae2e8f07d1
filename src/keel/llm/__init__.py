"""The LLM layer: neutral message types, the ``Model`` protocol and its backends."""

from keel.llm.base import Model
from keel.llm.instrumented import InstrumentedModel
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
from keel.llm.providers import available_providers, create_model
from keel.llm.structured import StructuredResult, request_structured

__all__ = [
    "AssistantMessage",
    "InstrumentedModel",
    "Message",
    "Model",
    "ModelSettings",
    "Part",
    "Response",
    "ResponseDone",
    "StreamEvent",
    "StructuredResult",
    "SystemMessage",
    "TextDelta",
    "TextPart",
    "ToolCallDelta",
    "ToolCallPart",
    "ToolDefinition",
    "ToolMessage",
    "Usage",
    "UserMessage",
    "available_providers",
    "create_model",
    "request_structured",
]
