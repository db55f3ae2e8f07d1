"""The LLM layer: neutral message types, the ``Model`` protocol, its backends and wrappers.

Backends that need an optional SDK (``keel.llm.local``, ``keel.llm.openai``,
``keel.llm.anthropic``) are imported on their own or through ``create_model``, never here.
"""

from keel.llm.base import Model
from keel.llm.circuit import CircuitBreaker, circuit_states
from keel.llm.cost import Price, PriceTable
from keel.llm.fallback import FallbackModel
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
from keel.llm.provider import Provider
from keel.llm.providers import available_providers, create_model
from keel.llm.retry import RetryModel
from keel.llm.structured import StructuredResult, request_structured
from keel.llm.timeout import TimeoutModel, deadline
from keel.llm.wrapper import WrapperModel

__all__ = [
    "AssistantMessage",
    "CircuitBreaker",
    "FallbackModel",
    "InstrumentedModel",
    "Message",
    "Model",
    "ModelSettings",
    "Part",
    "Price",
    "PriceTable",
    "Provider",
    "Response",
    "ResponseDone",
    "RetryModel",
    "StreamEvent",
    "StructuredResult",
    "SystemMessage",
    "TextDelta",
    "TextPart",
    "TimeoutModel",
    "ToolCallDelta",
    "ToolCallPart",
    "ToolDefinition",
    "ToolMessage",
    "Usage",
    "UserMessage",
    "WrapperModel",
    "available_providers",
    "circuit_states",
    "create_model",
    "deadline",
    "request_structured",
]
