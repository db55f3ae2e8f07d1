"""Cache keys: what makes two model calls the same call.

The exact key is the SHA-256 of a canonical JSON document holding everything the model sees and
every setting that changes its answer: the model name, the sampling settings, the output schema,
the tool set (names and schema hashes), a hash of the system prompt and the full message list.
Provenance labels are left out: they are Keel's bookkeeping, not text the model reads.

The semantic scope is the same document without the last user message: two calls may share a
semantic entry only if everything but that message is identical, so a semantic hit never crosses
models, settings, tool sets, system prompts or conversation histories.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from keel.llm.messages import (
    AssistantMessage,
    Message,
    ModelSettings,
    SystemMessage,
    ToolCallPart,
    ToolDefinition,
    ToolMessage,
    UserMessage,
)

__all__ = ["CacheKey", "cache_key", "canonical_json", "tool_schema_hash"]

KEY_VERSION = "keel-cache-1"
"""Bumped whenever the key document changes shape, so old entries are never matched."""


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: equal values give equal strings."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def tool_schema_hash(tool: ToolDefinition) -> str:
    """A hash of what the model is told about a tool: name, description, schema, examples."""
    return _sha256(
        canonical_json([tool.name, tool.description, tool.parameters, list(tool.examples)])
    )[:16]


def _message(message: Message) -> dict[str, Any]:
    if isinstance(message, AssistantMessage):
        parts: list[dict[str, Any]] = []
        for part in message.parts:
            if isinstance(part, ToolCallPart):
                parts.append({"call": [part.id, part.name, part.arguments]})
            else:
                parts.append({"text": part.text})
        return {"role": "assistant", "parts": parts}
    if isinstance(message, ToolMessage):
        return {
            "role": "tool",
            "id": message.tool_call_id,
            "name": message.name,
            "content": message.content,
            "error": message.is_error,
        }
    return {"role": message.role, "content": message.content}


@dataclass(frozen=True)
class CacheKey:
    """The keys of one call.

    ``exact`` matches identical calls. ``scope`` and ``text`` are set when the call ends with a
    user message: ``text`` is that message (what the semantic cache embeds) and ``scope`` hashes
    everything else, so semantic matches are searched only among calls that share it.
    """

    exact: str
    scope: str | None
    text: str | None


def cache_key(
    model_name: str,
    messages: Sequence[Message],
    *,
    tools: Sequence[ToolDefinition] = (),
    output_schema: dict[str, Any] | None = None,
    settings: ModelSettings | None = None,
) -> CacheKey:
    """The exact key and semantic scope of a call (see the module docstring)."""
    system = "\n\n".join(m.content for m in messages if isinstance(m, SystemMessage))
    document: dict[str, Any] = {
        "v": KEY_VERSION,
        "model": model_name,
        "settings": (settings or ModelSettings()).model_dump(mode="json"),
        "output_schema": output_schema,
        "tools": sorted([t.name, tool_schema_hash(t)] for t in tools),
        "system": _sha256(system),
    }
    rendered = [_message(m) for m in messages]
    exact = _sha256(canonical_json({**document, "messages": rendered}))
    if not messages or not isinstance(messages[-1], UserMessage):
        return CacheKey(exact=exact, scope=None, text=None)
    scope = _sha256(canonical_json({**document, "history": rendered[:-1]}))
    return CacheKey(exact=exact, scope=scope, text=messages[-1].content)
