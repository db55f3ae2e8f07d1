"""Token counting without the model's tokenizer: tiktoken if usable offline, else an estimate.

The estimate is one token per three UTF-8 bytes, rounded up, plus a fixed overhead per chat
message for its role markers. Real tokenizers give about four bytes per token on English prose
(GPT's cl100k/o200k, SmolLM2's BPE), so the estimate over-counts by roughly a quarter: a budget
built on it stays under the real limit, at the cost of some unused room. Code and non-Latin
scripts tokenise more densely, so leave a margin when counting those. Some chat templates add a
default system prompt when a conversation has none (SmolLM2's does), which no estimate sees.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Sequence

from keel.llm.messages import AssistantMessage, Message, ToolMessage

__all__ = [
    "MESSAGE_OVERHEAD_TOKENS",
    "estimate_message_tokens",
    "estimate_tokens",
    "message_text",
    "tiktoken_counter",
]

MESSAGE_OVERHEAD_TOKENS = 6
"""Tokens a chat template adds around one message (ChatML uses 5: start, role, newlines, end)."""

_BYTES_PER_TOKEN = 3


def estimate_tokens(text: str) -> int:
    """A deliberately high estimate of the tokens ``text`` takes (see the module docstring)."""
    size = len(text.encode("utf-8"))
    return -(-size // _BYTES_PER_TOKEN)


def message_text(message: Message) -> str:
    """The text a message puts into a prompt (tool calls as their JSON), for counting."""
    if isinstance(message, AssistantMessage):
        calls = [f"{c.name}({c.arguments})" for c in message.tool_calls]
        return "\n".join([message.text, *calls])
    if isinstance(message, ToolMessage):
        return f"{message.name}: {message.content}"
    return message.content


def estimate_message_tokens(
    messages: Sequence[Message], count: Callable[[str], int] = estimate_tokens
) -> int:
    """Tokens of a whole prompt: each message's text plus its template overhead."""
    return sum(count(message_text(m)) + MESSAGE_OVERHEAD_TOKENS for m in messages) + 3


@functools.cache
def tiktoken_counter(model_name: str) -> Callable[[str], int] | None:
    """tiktoken's exact counter for an OpenAI model, or None when it cannot work offline.

    tiktoken downloads its encoding files on first use; offline that fails unless they are in
    its cache (``TIKTOKEN_CACHE_DIR``), so any failure means "use the estimate".
    """
    try:
        tiktoken = importlib.import_module("tiktoken")
        try:
            encoding = tiktoken.encoding_for_model(model_name)
        except KeyError:
            encoding = tiktoken.get_encoding("o200k_base")
    except Exception:
        return None

    def count(text: str) -> int:
        return len(encoding.encode(text, disallowed_special=()))

    return count
