"""Context window management: every prompt assembled under the model's token budget."""

from keel.context.builder import BuiltContext, ContextBuilder
from keel.context.placement import RetrievedItem, split_edges, truncate_to_tokens
from keel.context.summary import Summarizer, Summary

__all__ = [
    "BuiltContext",
    "ContextBuilder",
    "RetrievedItem",
    "Summarizer",
    "Summary",
    "split_edges",
    "truncate_to_tokens",
]
