"""The conversation (session, thread) a span belongs to: ``gen_ai.conversation.id`` on every span.

A run opens a scope with ``conversation(id)``; while it is open, Keel's span processor stamps
every span that starts, in any layer, with that id, and the span already current when the scope
opens (say, a CLI's root span) gets it too. A scope opened inside another keeps the outer id
(``keep_outer=True``, the default), so a graph run inside a served session is filed under the
session. Standard library and the OpenTelemetry API only.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager

from keel.observe import semconv as sc

__all__ = ["conversation", "current_conversation_id"]

_current: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "keel_conversation_id", default=None
)


def current_conversation_id() -> str | None:
    """The id of the conversation whose scope is open in this context, if any."""
    return _current.get()


@contextmanager
def conversation(conversation_id: str, *, keep_outer: bool = True) -> Iterator[str]:
    """Attribute the spans started inside to ``conversation_id``; yields the id in force.

    With ``keep_outer`` an already open scope wins, so nested runs share the outer id.
    """
    outer = _current.get()
    if outer is not None and keep_outer:
        yield outer
        return
    if not conversation_id:
        raise ValueError("a conversation id must not be empty")
    token = _current.set(conversation_id)
    try:
        from opentelemetry import trace

        span = trace.get_current_span()
        attributes = getattr(span, "attributes", None) or {}
        if span.is_recording() and sc.GEN_AI_CONVERSATION_ID not in attributes:
            span.set_attribute(sc.GEN_AI_CONVERSATION_ID, conversation_id)
        yield conversation_id
    finally:
        _current.reset(token)
