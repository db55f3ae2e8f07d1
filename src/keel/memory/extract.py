"""Structured extraction: fill a Pydantic schema from a document, citing where each value came from.

The model sees numbered passages (chunks of a document, or hits already retrieved) and answers,
for every field of the schema, a value and the numbers of the passages it comes from. The reply's
JSON schema lets a passage number be only one that was shown, a value needs at least one passage,
and "not stated" is ``null`` with none; a reply that breaks a rule goes back to the model with the
error (``keel.llm.structured``). Keel then checks what it can: a value whose text does not appear
in the passages it cites is marked ``unverified`` rather than trusted. A document longer than the
prompt budget is read in windows of passages; each field keeps the first verified value found.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from types import NoneType, UnionType
from typing import Any, Generic, Literal, TypeVar, Union, cast, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, create_model

from keel.errors import DocumentError
from keel.llm.base import Model
from keel.llm.messages import Message, ModelSettings, SystemMessage, Usage, UserMessage
from keel.llm.structured import request_structured
from keel.memory.base import Hit
from keel.memory.chunking import chunk_document

__all__ = [
    "Extraction",
    "ExtractionCitation",
    "FieldStatus",
    "document_passages",
    "extract",
    "extract_document",
]

T = TypeVar("T", bound=BaseModel)

FieldStatus = Literal["verified", "unverified", "uncheckable", "missing"]
"""What Keel could check of a field's value: found in the cited passages (``verified``), not
found there (``unverified``), not text or a number so not checkable (``uncheckable``), or no
value at all (``missing``)."""

SYSTEM_PROMPT = (
    "You fill in fields using only the numbered passages you are given. For each field, copy "
    "the value as it is written in a passage and list the numbers of the passages it comes "
    "from. If no passage states a field, its value is null and its passages are empty."
)
MAX_CITED = 3


class ExtractionCitation(BaseModel):
    """A passage a value was taken from, and where in it the value appears (if it does).

    ``start``/``end`` are the passage's character offsets in its loaded document;
    ``quote_start``/``quote_end`` are the offsets of ``quote``, the value as the passage writes
    it, in the same document (None when the value was not found in this passage).
    """

    model_config = ConfigDict(frozen=True)

    chunk_id: str
    source: str
    heading: str = ""
    page: int | None = None
    start: int | None = None
    end: int | None = None
    quote: str | None = None
    quote_start: int | None = None
    quote_end: int | None = None


class Extraction(BaseModel, Generic[T]):
    """The filled schema, with each field's citations and what could be checked of it."""

    value: T
    citations: dict[str, list[ExtractionCitation]]
    status: dict[str, FieldStatus]
    model_name: str
    usage: Usage = Field(default_factory=Usage)
    attempts: int = 0

    @property
    def unverified(self) -> list[str]:
        """Fields whose value does not appear in the passages cited for it."""
        return [name for name, status in self.status.items() if status == "unverified"]

    @property
    def missing(self) -> list[str]:
        """Fields no passage gave a value for."""
        return [name for name, status in self.status.items() if status == "missing"]


def document_passages(path: Path, *, max_chars: int = 800, overlap: int = 0) -> list[Hit]:
    """The chunks of one document as passages, with the metadata ingestion gives them (source,
    heading, page, chunk, start, end) and ids ``{name}#{chunk}``."""
    from keel.memory.loaders import LOADERS

    loader = LOADERS.get(path.suffix.lower())
    if loader is None:
        kinds = ", ".join(sorted(LOADERS))
        raise DocumentError(f"{path}: unsupported kind of file", hint=f"supported: {kinds}")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DocumentError(f"cannot read {path}: {e.strerror}") from e
    try:
        loaded = loader.load(data)
    except DocumentError as e:
        raise DocumentError(f"{path}: {e.message}", hint=e.hint) from e
    passages = []
    for chunk in chunk_document(loaded, max_chars=max_chars, overlap=overlap):
        metadata: dict[str, str | int | float | bool] = {
            "source": path.name,
            "heading": chunk.heading,
            "chunk": chunk.index,
            "start": chunk.start,
            "end": chunk.end,
        }
        if chunk.page is not None:
            metadata["page"] = chunk.page
        passages.append(
            Hit(id=f"{path.name}#{chunk.index}", score=0.0, text=chunk.text, metadata=metadata)
        )
    if not passages:
        raise DocumentError(f"{path} has no text to extract from")
    return passages


async def extract_document(
    model: Model,
    schema: type[T],
    path: Path,
    *,
    max_chars: int = 800,
    **options: Any,
) -> Extraction[T]:
    """Fills ``schema`` from the document at ``path`` (any format the loaders read), chunked
    into passages of at most ``max_chars``; ``options`` as for ``extract``."""
    return await extract(model, schema, document_passages(path, max_chars=max_chars), **options)


async def extract(
    model: Model,
    schema: type[T],
    passages: Sequence[Hit],
    *,
    max_prompt_chars: int = 3000,
    max_windows: int | None = None,
    retries: int = 2,
    max_tokens: int | None = None,
    instructions: str = "",
) -> Extraction[T]:
    """Fills ``schema`` from ``passages`` with ``model``; every field of ``schema`` must accept
    None (a value that is not in the passages is left empty, never invented).

    Passages are shown in windows of at most ``max_prompt_chars`` characters (at most
    ``max_windows`` of them); the first window's verified value of a field wins, then its first
    unverified one. ``retries`` bounds the re-asks after a reply that breaks the rules.
    """
    fields = _fields(schema)
    if not passages:
        raise ValueError("no passages to extract from")
    windows = _windows(list(passages), max_prompt_chars)[:max_windows]
    values: dict[str, Any] = dict.fromkeys(fields)
    citations: dict[str, list[ExtractionCitation]] = {name: [] for name in fields}
    status: dict[str, FieldStatus] = dict.fromkeys(fields, "missing")
    usage, attempts = Usage(), 0
    for window in windows:
        reply_type = _reply_type(schema, len(window))
        messages: list[Message] = [
            SystemMessage(content=f"{SYSTEM_PROMPT} {instructions}".strip()),
            UserMessage(content=_prompt(schema, window)),
        ]
        tokens = max_tokens or 48 + 64 * len(fields)
        result = await request_structured(
            model, messages, reply_type, settings=ModelSettings(max_tokens=tokens), retries=retries
        )
        usage, attempts = usage + result.usage, attempts + result.attempts
        for name in fields:
            answer = getattr(result.output, name)
            if answer.value is None or status[name] == "verified":
                continue
            cited = [window[n - 1] for n in dict.fromkeys(answer.passages)]
            found = _cite(answer.value, cited)
            if status[name] == "missing" or found[1] == "verified":
                values[name], citations[name], status[name] = answer.value, found[0], found[1]
        if all(s == "verified" for s in status.values()):
            break
    return Extraction[schema](  # type: ignore[valid-type]
        value=schema.model_validate(values),
        citations=citations,
        status=status,
        model_name=model.name,
        usage=usage,
        attempts=attempts,
    )


# -- the reply the model must give --------------------------------------------------------------


def _fields(schema: type[BaseModel]) -> dict[str, Any]:
    fields = {}
    for name, info in schema.model_fields.items():
        annotation = info.annotation
        if not _accepts_none(annotation):
            raise ValueError(
                f"field {name!r} of {schema.__name__} does not accept None; extraction leaves "
                f"a value it cannot find empty, so declare it as `{name}: ... | None = None`"
            )
        fields[name] = annotation
    if not fields:
        raise ValueError(f"{schema.__name__} has no fields to extract")
    return fields


def _accepts_none(annotation: Any) -> bool:
    if annotation is None or annotation is NoneType or annotation is Any:
        return True
    return get_origin(annotation) in (Union, UnionType) and NoneType in get_args(annotation)


def _reply_type(schema: type[BaseModel], passages: int) -> type[BaseModel]:
    """Per field, either a value with 1-3 passage numbers (only numbers of passages shown) or
    null with none. The alternatives are in the JSON schema (``anyOf``), so a local model's
    constrained decoding cannot give a value without a passage or cite one it was not shown."""
    numbers: Any = Literal.__getitem__(tuple(range(1, passages + 1)))
    fields: dict[str, Any] = {}
    for name, info in schema.model_fields.items():
        found = create_model(
            f"{schema.__name__}_{name}",
            value=(cast(Any, _without_none(info.annotation)), Field(description=info.description)),
            passages=(list[numbers], Field(min_length=1, max_length=MAX_CITED)),
        )
        fields[name] = (found | _NotFound, ...)
    reply: type[BaseModel] = create_model(f"{schema.__name__}Extraction", **fields)
    return reply


class _NotFound(BaseModel):
    model_config = ConfigDict(title="NotFound")

    value: None
    passages: list[int] = Field(max_length=0)


def _without_none(annotation: Any) -> Any:
    if annotation is Any or annotation is None:
        return Any
    args = tuple(a for a in get_args(annotation) if a is not NoneType)
    return args[0] if len(args) == 1 else Union.__getitem__(args)


def _describe(schema: type[BaseModel]) -> str:
    lines = []
    for name, info in schema.model_fields.items():
        kind = _type_name(info.annotation)
        lines.append(f"- {name} ({kind})" + (f": {info.description}" if info.description else ""))
    return "\n".join(lines)


def _type_name(annotation: Any) -> str:
    args = [a for a in get_args(annotation) if a is not NoneType]
    inner = args[0] if len(args) == 1 else annotation
    return getattr(inner, "__name__", None) or str(inner).replace("typing.", "")


def _prompt(schema: type[BaseModel], window: Sequence[Hit]) -> str:
    blocks = []
    for number, hit in enumerate(window, start=1):
        where = str(hit.metadata.get("source", hit.id))
        if hit.metadata.get("heading"):
            where += f" § {hit.metadata['heading']}"
        if "page" in hit.metadata:
            where += f", page {hit.metadata['page']}"
        blocks.append(f"[{number}] {where}\n{hit.text.strip()}")
    return "Passages:\n\n" + "\n\n".join(blocks) + f"\n\nFields to fill in:\n{_describe(schema)}"


def _windows(passages: list[Hit], budget: int) -> list[list[Hit]]:
    windows: list[list[Hit]] = [[]]
    used = 0
    for hit in passages:
        if windows[-1] and used + len(hit.text) > budget:
            windows.append([])
            used = 0
        windows[-1].append(hit)
        used += len(hit.text)
    return windows


# -- checking values against the passages they cite ----------------------------------------------


def _cite(value: Any, cited: list[Hit]) -> tuple[list[ExtractionCitation], FieldStatus]:
    """The citations of ``value`` (with where it appears in each passage) and its status:
    verified if every checkable part of it appears in a cited passage."""
    patterns = [p for p in (_pattern(leaf) for leaf in _leaves(value)) if p is not None]
    citations = []
    for hit in cited:
        match = next((m for p in patterns if (m := p.search(hit.text))), None)
        citations.append(_citation(hit, match))
    if not patterns:
        return citations, "uncheckable"
    found = all(any(p.search(hit.text) for hit in cited) for p in patterns)
    return citations, "verified" if found else "unverified"


def _citation(hit: Hit, match: re.Match[str] | None) -> ExtractionCitation:
    meta = hit.metadata

    def number(key: str) -> int | None:
        value = meta.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    start = number("start")
    quote_start = quote_end = None
    if match is not None and start is not None:
        quote_start, quote_end = start + match.start(), start + match.end()
    return ExtractionCitation(
        chunk_id=hit.id,
        source=str(meta.get("source", hit.id)),
        heading=str(meta.get("heading", "")),
        page=number("page"),
        start=start,
        end=number("end"),
        quote=match.group(0) if match is not None else None,
        quote_start=quote_start,
        quote_end=quote_end,
    )


def _leaves(value: Any) -> list[Any]:
    """The scalar parts of a value: items of lists, values of dicts and models."""
    if isinstance(value, BaseModel):
        return [leaf for v in value.model_dump().values() for leaf in _leaves(v)]
    if isinstance(value, dict):
        return [leaf for v in value.values() for leaf in _leaves(v)]
    if isinstance(value, list | tuple | set):
        return [leaf for v in value for leaf in _leaves(v)]
    return [] if value is None else [value]


def _pattern(leaf: Any) -> re.Pattern[str] | None:
    """How a scalar is written in text (words apart by any white space, any case; a number
    with or without thousands separators), or None if it cannot be checked (a bool, a date)."""
    if isinstance(leaf, bool):
        return None
    if isinstance(leaf, int | float) and math.isfinite(leaf):
        forms = {f"{leaf:g}", str(leaf)} if isinstance(leaf, float) else set()
        if float(leaf).is_integer():
            whole = int(leaf)
            forms |= {str(whole), f"{whole:,}", f"{whole:,}".replace(",", " ")}
        alternatives = "|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True))
        return re.compile(rf"(?<![\d.,])(?:{alternatives})(?![\d]|[.,]\d)")
    if isinstance(leaf, str):
        words = leaf.split()
        if not words:
            return None
        body = r"\s+".join(re.escape(w) for w in words)
        before = r"(?<!\w)" if words[0][0].isalnum() else ""
        after = r"(?!\w)" if words[-1][-1].isalnum() else ""
        return re.compile(before + body + after, re.IGNORECASE)
    return None
