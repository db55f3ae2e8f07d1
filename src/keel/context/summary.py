"""Incremental summaries of the turns that no longer fit in the context window.

A ``Summary`` records its text and how many history messages it covers; each time the window
slides, ``Summarizer`` folds only the newly dropped messages into the previous summary, so a
long conversation costs one short model call per slide, never a re-read of everything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from keel.llm.base import Model
from keel.llm.messages import (
    AssistantMessage,
    Message,
    ModelSettings,
    SystemMessage,
    ToolMessage,
    UserMessage,
)

__all__ = ["Summarizer", "Summary", "render_transcript"]

_INSTRUCTIONS = (
    "You maintain a running summary of a conversation between a user and an assistant. "
    "Update the summary with the new messages. Keep facts, names, numbers, decisions and open "
    "questions; drop greetings and repetition. Reply with the updated summary only."
)


@dataclass(frozen=True)
class Summary:
    """The summary text and the number of leading history messages it stands for."""

    text: str = ""
    covered: int = 0


def render_transcript(messages: Sequence[Message], max_chars_per_message: int = 1500) -> str:
    """Messages as plain ``role: text`` lines for a summarising model."""
    lines = []
    for m in messages:
        if isinstance(m, AssistantMessage):
            calls = ", ".join(f"{c.name}({c.arguments})" for c in m.tool_calls)
            text = m.text + (f" [called {calls}]" if calls else "")
            role = "assistant"
        elif isinstance(m, ToolMessage):
            text, role = m.content, f"tool {m.name}"
        else:
            text, role = m.content, m.role
        if len(text) > max_chars_per_message:
            text = (
                text[: max_chars_per_message // 2] + " [...] " + text[-max_chars_per_message // 2 :]
            )
        lines.append(f"{role}: {text}")
    return "\n".join(lines)


class Summarizer:
    """Folds dropped messages into a summary with ``model``, at most ``max_tokens`` long."""

    def __init__(self, model: Model, *, max_tokens: int = 160, max_input_chars: int = 4000) -> None:
        self.model = model
        self.max_tokens = max_tokens
        self.max_input_chars = max_input_chars

    async def update(self, previous: Summary, dropped: Sequence[Message]) -> Summary:
        """The summary after also covering ``dropped`` (the next messages after ``covered``)."""
        if not dropped:
            return previous
        transcript = render_transcript(dropped)[-self.max_input_chars :]
        prompt = (
            f"Current summary:\n{previous.text or '(empty)'}\n\n"
            f"New messages:\n{transcript}\n\nUpdated summary:"
        )
        response = await self.model.request(
            [SystemMessage(content=_INSTRUCTIONS), UserMessage(content=prompt)],
            settings=ModelSettings(max_tokens=self.max_tokens, temperature=0),
        )
        text = response.message.text.strip() or previous.text
        return Summary(text=text, covered=previous.covered + len(dropped))
