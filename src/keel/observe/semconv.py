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

# Message content, recorded only when content capture is on (``trace.capture_content``), as JSON
# and after redaction (``keel.observe.content``). Names follow the GenAI conventions.
GEN_AI_INPUT_MESSAGES: Final = "gen_ai.input.messages"
"""The messages sent to the model, as a JSON list of ``{role, parts}``."""
GEN_AI_OUTPUT_MESSAGES: Final = "gen_ai.output.messages"
"""The model's reply, as a JSON list of ``{role, parts, finish_reason}``."""
GEN_AI_TOOL_CALL_ARGUMENTS: Final = "gen_ai.tool.call.arguments"
"""The arguments of a tool call, as JSON."""
GEN_AI_TOOL_CALL_RESULT: Final = "gen_ai.tool.call.result"
"""The text of a tool call's result (or structured error) as the model saw it."""
KEEL_RETRIEVAL_QUERY: Final = "keel.retrieval.query"
"""The query text of a ``retrieval`` span."""

# Metrics attribute: which side of the usage a ``gen_ai.client.token.usage`` point counts.
GEN_AI_TOKEN_TYPE: Final = "gen_ai.token.type"

# Graph steps: one span per node a run executes, named ``node {name}``.
KEEL_GRAPH_NODE: Final = "keel.graph.node"
"""Name of the graph node a ``node`` span ran."""
KEEL_GRAPH_STEP: Final = "keel.graph.step"
"""1-based step of the run in which the node ran."""
KEEL_GRAPH_PATH: Final = "keel.graph.path"
"""Nodes a graph run visited, in order (on the ``invoke_agent`` span)."""
KEEL_GRAPH_RUN_ID: Final = "keel.graph.run_id"
"""Id of the checkpointed graph run (on the ``invoke_agent`` span)."""

__all__ += [
    "GEN_AI_INPUT_MESSAGES",
    "GEN_AI_OUTPUT_MESSAGES",
    "GEN_AI_TOKEN_TYPE",
    "GEN_AI_TOOL_CALL_ARGUMENTS",
    "GEN_AI_TOOL_CALL_RESULT",
    "KEEL_GRAPH_NODE",
    "KEEL_GRAPH_PATH",
    "KEEL_GRAPH_RUN_ID",
    "KEEL_GRAPH_STEP",
    "KEEL_RETRIEVAL_QUERY",
]

# Prompt-injection defence (keel.guard): one ``guard`` span per reviewed tool call.
KEEL_GUARD_TOOL: Final = "keel.guard.tool"
"""Name of the tool whose call the guard reviewed."""
KEEL_GUARD_DECISION: Final = "keel.guard.decision"
"""What the guard decided for a call: allow, ask (human approval) or deny."""
KEEL_GUARD_RULE: Final = "keel.guard.rule"
"""Name of the policy rule (or validator) that decided."""
KEEL_GUARD_REASON: Final = "keel.guard.reason"
"""The decision in one sentence (names of sources only, never argument values)."""
KEEL_GUARD_UNTRUSTED_ARGUMENTS: Final = "keel.guard.untrusted_arguments"
"""Names of the call's arguments that derive from untrusted content."""
KEEL_GUARD_SOURCES: Final = "keel.guard.sources"
"""Untrusted sources (``tool:name#call``, ``document:id#chunk``, ``web:url``) of the arguments."""
KEEL_GUARD_SOURCE: Final = "keel.guard.source"
"""Where screened text came from (on a ``keel.guard.injection`` span event)."""
KEEL_GUARD_INJECTION_KINDS: Final = "keel.guard.injection.kinds"
"""Kinds of injection pattern the screening found (on a ``keel.guard.injection`` event)."""
KEEL_GUARD_INJECTION_SCORE: Final = "keel.guard.injection.score"
"""Score of the screening, in [0, 1] (on a ``keel.guard.injection`` event)."""
KEEL_GUARD_LABEL: Final = "keel.guard.label"
"""Trust of what a model was shown for a ``chat`` turn: trusted or untrusted."""

__all__ += [
    "KEEL_GUARD_DECISION",
    "KEEL_GUARD_INJECTION_KINDS",
    "KEEL_GUARD_INJECTION_SCORE",
    "KEEL_GUARD_LABEL",
    "KEEL_GUARD_REASON",
    "KEEL_GUARD_RULE",
    "KEEL_GUARD_SOURCE",
    "KEEL_GUARD_SOURCES",
    "KEEL_GUARD_TOOL",
    "KEEL_GUARD_UNTRUSTED_ARGUMENTS",
]

# Budgets (keel.budget): on a ``budget {model}`` span around each budgeted model call, and on
# the ``execute_tool`` span of each budgeted tool call.
KEEL_BUDGET_SCOPE: Final = "keel.budget.scope"
"""Keys of the budgets a call was charged to (``run:r1``, ``tenant:acme@2026-11-24``)."""
KEEL_BUDGET_RESERVED: Final = "keel.budget.reserved"
"""The worst case reserved before the call, as ``counter=value`` strings."""
KEEL_BUDGET_SETTLED: Final = "keel.budget.settled"
"""What the call actually used (settled after it), as ``counter=value`` strings."""
KEEL_BUDGET_REMAINING: Final = "keel.budget.remaining"
"""What each limited counter had left after the reservation: ``key counter=value`` strings."""
KEEL_BUDGET_EXCEEDED: Final = "keel.budget.exceeded"
"""True when the call was refused because a budget could not take it."""
KEEL_BUDGET_EXCEEDED_SCOPE: Final = "keel.budget.exceeded.scope"
"""The key of the budget that refused the call."""
KEEL_BUDGET_LIMIT: Final = "keel.budget.limit"
"""The counter that ran out (``total_tokens``, ``cost_usd``, ``tool_calls``, ...)."""

__all__ += [
    "KEEL_BUDGET_EXCEEDED",
    "KEEL_BUDGET_EXCEEDED_SCOPE",
    "KEEL_BUDGET_LIMIT",
    "KEEL_BUDGET_REMAINING",
    "KEEL_BUDGET_RESERVED",
    "KEEL_BUDGET_SCOPE",
    "KEEL_BUDGET_SETTLED",
]

# Response cache (keel.cache): one ``cache {model}`` span per cached model call.
KEEL_CACHE_HIT: Final = "keel.cache.hit"
"""Whether the cache answered the call (true) or the model did (false)."""
KEEL_CACHE_KIND: Final = "keel.cache.kind"
"""Which lookup answered a hit: exact (same call) or semantic (similar last user message)."""
KEEL_CACHE_SIMILARITY: Final = "keel.cache.similarity"
"""Cosine similarity of a semantic hit's stored message to the call's (1.0 for an exact hit)."""
KEEL_CACHE_SAVED_USD: Final = "keel.cache.saved_usd"
"""US dollars the hit saved: the stored response's usage at the price table's price."""
KEEL_CACHE_NAMESPACE: Final = "keel.cache.namespace"
"""Namespace (tenant/agent) the entry was looked up in."""
KEEL_CACHE_SKIPPED: Final = "keel.cache.skipped"
"""Why the call bypassed the cache: sampled (temperature > 0 or unknown) or effectful."""
KEEL_CACHE_STORED: Final = "keel.cache.stored"
"""Whether a missed call's response was stored."""

__all__ += [
    "KEEL_CACHE_HIT",
    "KEEL_CACHE_KIND",
    "KEEL_CACHE_NAMESPACE",
    "KEEL_CACHE_SAVED_USD",
    "KEEL_CACHE_SIMILARITY",
    "KEEL_CACHE_SKIPPED",
    "KEEL_CACHE_STORED",
]
