"""Span attribute names and operation values that Keel records.

The ``gen_ai.*`` and ``error.type`` names follow the OpenTelemetry GenAI semantic conventions
(https://opentelemetry.io/docs/specs/semconv/gen-ai/), so any OTel backend that understands them
(Phoenix, Langfuse, Jaeger) shows Keel's spans as model, tool and agent calls. The ``keel.*`` names
are Keel's own additions, for what the conventions do not cover. Plain strings only: importing this
module costs nothing and needs no OpenTelemetry package.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "ERROR_TYPE",
    "GEN_AI_AGENT_NAME",
    "GEN_AI_CONVERSATION_ID",
    "GEN_AI_OPERATION_NAME",
    "GEN_AI_PROVIDER_NAME",
    "GEN_AI_REQUEST_MAX_TOKENS",
    "GEN_AI_REQUEST_MODEL",
    "GEN_AI_REQUEST_TEMPERATURE",
    "GEN_AI_RESPONSE_FINISH_REASONS",
    "GEN_AI_RESPONSE_MODEL",
    "GEN_AI_TOOL_CALL_ID",
    "GEN_AI_TOOL_NAME",
    "GEN_AI_USAGE_INPUT_TOKENS",
    "GEN_AI_USAGE_OUTPUT_TOKENS",
    "KEEL_AGENT_STEPS",
    "KEEL_CITATIONS",
    "KEEL_REQUEST_TOOLS",
    "KEEL_TOOL_VERSION",
    "OPERATION_CHAT",
    "OPERATION_EMBEDDINGS",
    "OPERATION_EXECUTE_TOOL",
    "OPERATION_INVOKE_AGENT",
    "OPERATION_RETRIEVAL",
]

# What a span does: one of the OPERATION_* values below. Span names start with it too
# ("chat smollm2", "execute_tool search").
GEN_AI_OPERATION_NAME: Final = "gen_ai.operation.name"

OPERATION_CHAT: Final = "chat"
"""One request to a language model."""
OPERATION_EXECUTE_TOOL: Final = "execute_tool"
"""One tool call, from validation of the arguments to the result handed back to the model."""
OPERATION_INVOKE_AGENT: Final = "invoke_agent"
"""One agent run: the span that holds its model calls, tool calls and retrievals."""
OPERATION_EMBEDDINGS: Final = "embeddings"
"""One request to an embedding model."""
OPERATION_RETRIEVAL: Final = "retrieval"
"""One query of a vector or document store."""

# Model calls.
GEN_AI_PROVIDER_NAME: Final = "gen_ai.provider.name"
GEN_AI_REQUEST_MODEL: Final = "gen_ai.request.model"
GEN_AI_RESPONSE_MODEL: Final = "gen_ai.response.model"
GEN_AI_REQUEST_MAX_TOKENS: Final = "gen_ai.request.max_tokens"
GEN_AI_REQUEST_TEMPERATURE: Final = "gen_ai.request.temperature"
GEN_AI_RESPONSE_FINISH_REASONS: Final = "gen_ai.response.finish_reasons"
GEN_AI_USAGE_INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"

# Tool calls.
GEN_AI_TOOL_NAME: Final = "gen_ai.tool.name"
GEN_AI_TOOL_CALL_ID: Final = "gen_ai.tool.call.id"

# Agents and conversations.
GEN_AI_AGENT_NAME: Final = "gen_ai.agent.name"
GEN_AI_CONVERSATION_ID: Final = "gen_ai.conversation.id"

# The class of error that ended a span (an exception's type name, or a structured error's type).
ERROR_TYPE: Final = "error.type"

# Keel's own attributes.
KEEL_REQUEST_TOOLS: Final = "keel.request.tools"
"""Names of the tools offered to the model in a ``chat`` request."""
KEEL_TOOL_VERSION: Final = "keel.tool.version"
"""Version of the tool that an ``execute_tool`` span ran."""
KEEL_AGENT_STEPS: Final = "keel.agent.steps"
"""Model-and-tools rounds an agent used before it answered or hit its step limit."""
KEEL_CITATIONS: Final = "keel.citations"
"""Numbers of the retrieved passages a grounded answer cites."""

# Resilience and cost of model calls (keel.llm wrappers).
KEEL_COST_USD: Final = "keel.cost.usd"
"""Price of a ``chat`` call in US dollars, from the configured price table (absent if unpriced)."""
KEEL_RETRY_ATTEMPT: Final = "keel.retry.attempt"
"""1-based attempt number of a retried model call (on the ``keel.retry`` span event)."""
KEEL_RETRY_DELAY: Final = "keel.retry.delay_s"
"""Seconds waited before the next attempt of a retried model call."""
KEEL_FALLBACK_MODEL: Final = "keel.fallback.model"
"""Name of the model of a fallback chain that was tried (on events) or that answered (on spans)."""
KEEL_CIRCUIT_STATE: Final = "keel.circuit.state"
"""State of a model's circuit breaker when it was consulted: closed, open or half_open."""

__all__ += [
    "KEEL_CIRCUIT_STATE",
    "KEEL_COST_USD",
    "KEEL_FALLBACK_MODEL",
    "KEEL_RETRY_ATTEMPT",
    "KEEL_RETRY_DELAY",
]
