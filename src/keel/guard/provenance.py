"""Provenance labels on messages, tool results, retrieved chunks and values derived from them.

A label (``keel.llm.messages.Provenance``) lists the sources a value came from; it is trusted only
when every source is (system, developer, the authenticated user's own request). The rule for
derived values is the join: anything computed from an untrusted value is untrusted.

In a plain agent loop one model reads everything, so what it writes derives from its whole
context. ``argument_labels`` is precise where it can be: an argument whose value appears verbatim
in trusted text (the user's request, the system prompt) is a literal from trusted input and is
labelled with that message; any other argument of a model whose context holds untrusted content is
labelled with every untrusted source in it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict

from keel.llm.messages import (
    AssistantMessage,
    Message,
    Provenance,
    Source,
    SystemMessage,
    ToolCallPart,
    ToolMessage,
    UserMessage,
)

__all__ = [
    "DEVELOPER",
    "SYSTEM",
    "USER",
    "Labelled",
    "Provenance",
    "Source",
    "agent_output",
    "argument_labels",
    "context_label",
    "document",
    "join",
    "label_answer",
    "label_hit",
    "label_message",
    "provenance_of",
    "tool_output",
    "web",
]

T = TypeVar("T")

SYSTEM = Provenance(sources=(Source(kind="system"),))
DEVELOPER = Provenance(sources=(Source(kind="developer"),))
USER = Provenance(sources=(Source(kind="user"),))


def tool_output(name: str, call_id: str = "") -> Provenance:
    """The label of what tool ``name`` returned for call ``call_id`` (untrusted)."""
    return Provenance(sources=(Source(kind="tool", name=name, ref=call_id),))


def document(doc_id: str, chunk: str | int = "") -> Provenance:
    """The label of a retrieved document or one of its chunks (untrusted)."""
    return Provenance(sources=(Source(kind="document", name=doc_id, ref=str(chunk)),))


def web(url: str) -> Provenance:
    """The label of web content fetched from ``url`` (untrusted). Credentials, query and
    fragment are dropped: labels end up in traces, and a URL's query may hold a token."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    clean = urlunsplit((parts.scheme, host, parts.path, "", "")) if parts.scheme else url
    return Provenance(sources=(Source(kind="web", name=clean),))


def agent_output(name: str) -> Provenance:
    """The label of another agent's output (untrusted: it may have read anything)."""
    return Provenance(sources=(Source(kind="agent", name=name),))


def join(labels: Iterable[Provenance]) -> Provenance:
    """The label of a value derived from all of ``labels`` (trusted only if all are)."""
    result = Provenance()
    for label in labels:
        result = result.join(label)
    return result


class Labelled(BaseModel, Generic[T]):
    """A value and its label; serialises to JSON with both, so labels survive checkpoints.

    ``map`` derives a new value and keeps the label; ``combine`` derives one from several and
    joins theirs (the derived-value rule).
    """

    model_config = ConfigDict(frozen=True)

    value: T
    provenance: Provenance

    @property
    def trusted(self) -> bool:
        return self.provenance.trusted

    def map(self, fn: Any) -> Labelled[Any]:
        """``fn(value)``, labelled like this value."""
        return Labelled[Any](value=fn(self.value), provenance=self.provenance)

    @staticmethod
    def combine(fn: Any, *values: Labelled[Any]) -> Labelled[Any]:
        """``fn(*plain values)``, labelled with the join of every input's label."""
        label = join(v.provenance for v in values)
        return Labelled[Any](value=fn(*(v.value for v in values)), provenance=label)


def provenance_of(message: Message) -> Provenance:
    """A message's label: its own, else derived from its role.

    System and user messages are trusted, tool messages untrusted (their source is the tool and
    the call id). An assistant message without a label was supplied by the caller (a prior
    conversation, a few-shot example) and counts as developer input; the agent loop labels every
    reply it gets with the join of what the model was shown.
    """
    if message.provenance is not None:
        return message.provenance
    if isinstance(message, SystemMessage):
        return SYSTEM
    if isinstance(message, UserMessage):
        return USER
    if isinstance(message, ToolMessage):
        return tool_output(message.name, message.tool_call_id)
    return DEVELOPER


def label_message(message: Message, provenance: Provenance) -> Message:
    """``message`` with ``provenance`` set (messages are frozen; this returns a copy)."""
    return message.model_copy(update={"provenance": provenance})


def label_hit(hit: Any) -> Provenance:
    """The label of a retrieved chunk (``keel.memory.base.Hit``): its document and chunk."""
    meta: Mapping[str, Any] = getattr(hit, "metadata", {}) or {}
    return document(str(meta.get("source", hit.id)), meta.get("chunk", hit.id))


def label_answer(answer: Any) -> Labelled[Any]:
    """A ``keel.graph.DocumentQA`` answer, labelled with every chunk it was shown (untrusted:
    documents may carry instructions, and the answer derives from them)."""
    shown = getattr(answer, "retrieved", ()) or ()
    label = join(document(c.source, c.chunk) for c in shown) if shown else USER
    return Labelled[Any](value=answer, provenance=label)


def context_label(messages: Sequence[Message], extra: Iterable[Provenance] = ()) -> Provenance:
    """The join of every message's label (and ``extra``, e.g. retrieved memory)."""
    return join([*(provenance_of(m) for m in messages), *extra])


def _text_of(message: Message) -> str:
    if isinstance(message, AssistantMessage):
        return message.text
    return message.content


def _leaves(value: Any) -> list[str]:
    """The scalar pieces of an argument, as text (``None`` and booleans carry no target)."""
    if value is None or isinstance(value, bool):
        return []
    if isinstance(value, Mapping):
        return [leaf for v in value.values() for leaf in _leaves(v)]
    if isinstance(value, list | tuple | set | frozenset):
        return [leaf for v in value for leaf in _leaves(v)]
    return [str(value).strip()]


_NUMBER = re.compile(r"(?<![\w.])\d[\d,]*(?:\.\d+)?(?![\w]|\.\d)")


def _as_number(text: str) -> float | None:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return None


def _appears_in(piece: str, text: str) -> bool:
    """Whether ``piece`` occurs in ``text`` as a whole token (not inside a longer word); a
    number matches the same number written with separators ("1500.0" and "$1,500")."""
    if not piece:
        return True
    pattern = r"(?<![\w@.\-/])" + re.escape(piece) + r"(?![\w@\-/]|\.\w)"
    if re.search(pattern, text, flags=re.IGNORECASE) is not None:
        return True
    value = _as_number(piece)
    return value is not None and any(_as_number(m) == value for m in _NUMBER.findall(text))


def argument_labels(
    call: ToolCallPart, messages: Sequence[Message], extra: Iterable[Provenance] = ()
) -> dict[str, Provenance]:
    """The label of each argument of ``call``, made by a model that was shown ``messages``.

    With an all-trusted context every argument is trusted. Otherwise an argument is trusted only
    when each of its scalar pieces appears, as a whole token, in one trusted message (then it is
    labelled with that message's sources: a literal the user or the developer wrote); any other
    argument is labelled with the join of the context, which is untrusted.
    """
    context = context_label(messages, extra)
    if context.trusted:
        return {name: context for name in call.arguments}
    trusted = [(provenance_of(m), _text_of(m)) for m in messages]
    trusted = [(label, text) for label, text in trusted if label.trusted and text]
    labels: dict[str, Provenance] = {}
    for name, value in call.arguments.items():
        found: list[Provenance] = []
        for piece in _leaves(value):
            match = next((lab for lab, text in trusted if _appears_in(piece, text)), None)
            if match is None:
                break
            found.append(match)
        else:
            labels[name] = join(found)  # no pieces (None, a flag): nothing to steer
            continue
        labels[name] = context
    return labels
