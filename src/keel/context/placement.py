"""Where retrieved material goes in a prompt, and how a text is cut to a token budget.

Models use what sits at the start and the end of a long context far better than what is buried
in the middle ("lost in the middle", Liu et al., 2023). ``split_edges`` therefore deals retrieved
items, best first, alternately to a block at the start of the prompt and a block at the end:
the best item opens the prompt, the second best closes it, and the weakest ones sit at the
inner edges of the two blocks, never in the middle of the conversation.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

__all__ = ["RetrievedItem", "split_edges", "truncate_to_tokens"]


@dataclass(frozen=True)
class RetrievedItem:
    """A piece of retrieved memory with its relevance (higher is more relevant)."""

    text: str
    score: float = 0.0
    source: str | None = None

    def render(self) -> str:
        return f"[{self.source}] {self.text}" if self.source else self.text


def split_edges(
    items: Sequence[RetrievedItem],
) -> tuple[list[RetrievedItem], list[RetrievedItem]]:
    """(start block, end block): ranks 1, 3, 5... open the prompt best first; ranks 2, 4, 6...
    close it, best last."""
    ranked = sorted(items, key=lambda item: item.score, reverse=True)
    start = ranked[0::2]
    end = list(reversed(ranked[1::2]))
    return start, end


async def truncate_to_tokens(
    text: str, max_tokens: int, count: Callable[[str], Awaitable[int]]
) -> str:
    """``text`` cut in the middle to at most ``max_tokens`` (head and tail kept), or unchanged.

    Tool output and documents usually carry their point at the start (what it is) and the end
    (the result or the error), so the middle goes.
    """
    size = await count(text)
    if size <= max_tokens:
        return text
    if max_tokens <= 8:
        return ""
    keep = len(text) * (max_tokens - 8) / size
    for _ in range(6):
        half = max(0, int(keep / 2))
        cut = f"{text[:half]}\n[... {len(text) - 2 * half} characters omitted ...]\n{text[-half:]}"
        if half == 0:
            cut = "[... omitted ...]"
        if await count(cut) <= max_tokens:
            return cut
        keep *= 0.8
    return ""
