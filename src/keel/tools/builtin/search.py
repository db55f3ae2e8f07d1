"""``search_docs``: the model searches the documents in memory through a ``Retriever``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from keel.tools.registry import ToolRegistry

if TYPE_CHECKING:
    from keel.memory.retrieval import Retriever

__all__ = ["search_tools"]


def search_tools(
    retriever: Retriever, *, namespace: str = "default", max_k: int = 10
) -> ToolRegistry:
    """A registry with ``search_docs`` over one namespace of ``retriever``'s store."""
    registry = ToolRegistry()

    @registry.tool(effects="read_only")
    async def search_docs(query: str, k: int = 4) -> list[dict[str, Any]]:
        """Search the documents for passages relevant to a query, best first.

        Args:
            query: What to look for, in a few words.
            k: How many passages to return (1-10).
        """
        hits = await retriever.retrieve(query, namespace, max(1, min(k, max_k)))
        return [
            {
                "id": h.id,
                "score": round(h.score, 4),
                "text": h.text,
                "source": h.metadata.get("source"),
            }
            for h in hits
        ]

    return registry
