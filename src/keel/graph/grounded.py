"""The document-grounded workflow: retrieve passages, then answer from them with citations.

A fixed two-step workflow rather than free tool choice, so that a very small model can carry it:
Keel retrieves; the model only has to answer from numbered passages, one short statement at a
time, each statement naming the passage it comes from. The reply is constrained to a JSON schema
whose passage numbers can only be those shown and whose statements have a bounded length, so
every citation points at a real chunk and the reply always parses. One worked example (about an
unrelated subject, so its facts cannot leak into answers unnoticed) shows the model the format.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, Literal

from opentelemetry import trace
from pydantic import BaseModel, ConfigDict, Field, computed_field, create_model

from keel.llm.base import Model
from keel.llm.messages import (
    AssistantMessage,
    Message,
    ModelSettings,
    SystemMessage,
    TextPart,
    Usage,
    UserMessage,
)
from keel.llm.structured import request_structured
from keel.memory.base import Hit
from keel.memory.retrieval import Retriever
from keel.observe import semconv as sc
from keel.observe.conversation import conversation

__all__ = ["Citation", "DocumentQA", "GroundedAnswer", "Statement"]

_tracer = trace.get_tracer("keel.graph")

SYSTEM_PROMPT = (
    "You answer questions using only the numbered passages you are given. Answer with one to "
    "three short statements. After each statement give the number of the passage it comes from."
)
MAX_STATEMENTS = 3
MAX_STATEMENT_CHARS = 300


class Citation(BaseModel):
    """A retrieved chunk, numbered as the model saw it."""

    model_config = ConfigDict(frozen=True)

    number: int
    source: str
    heading: str
    chunk: int
    score: float
    text: str

    @property
    def label(self) -> str:
        return f"{self.source} § {self.heading}" if self.heading else self.source


class Statement(BaseModel):
    """One sentence of the answer and the number of the citation that supports it."""

    model_config = ConfigDict(frozen=True)

    text: str
    citation: int


class GroundedAnswer(BaseModel):
    """An answer as cited statements, the chunks cited (numbered 1..n) and all retrieved."""

    question: str
    statements: list[Statement]
    citations: list[Citation]
    retrieved: list[Citation]
    model_name: str
    usage: Usage = Field(default_factory=Usage)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def answer(self) -> str:
        """The statements joined, each followed by its citation number: ``... [1] ... [2]``."""
        return " ".join(f"{s.text} [{s.citation}]" for s in self.statements)


def reply_type(passages: int) -> type[BaseModel]:
    """The reply the model must give: 1-3 bounded statements, each citing a shown passage.

    Its JSON schema (an ``enum`` of the passage numbers, a ``maxLength`` on each statement) is
    what constrains a local model's decoding, so the reply always parses and stays within
    ``max_tokens``.
    """
    numbers = Literal.__getitem__(tuple(range(1, passages + 1)))
    statement = create_model(
        "CitedStatement",
        text=(str, Field(min_length=1, max_length=MAX_STATEMENT_CHARS)),
        source=(numbers, ...),  # type: ignore[arg-type]
    )
    return create_model(
        "CitedAnswer",
        statements=(list[statement], Field(min_length=1, max_length=MAX_STATEMENTS)),
    )


def _citation(number: int, hit: Hit) -> Citation:
    meta = hit.metadata
    return Citation(
        number=number,
        source=str(meta.get("source", hit.id)),
        heading=str(meta.get("heading", "")),
        chunk=int(meta.get("chunk", 0)),
        score=hit.score,
        text=hit.text,
    )


def build_prompt(question: str, passages: Sequence[Citation]) -> str:
    blocks = [f"[{c.number}] {c.label}\n{c.text.strip()}" for c in passages]
    return "Passages:\n\n" + "\n\n".join(blocks) + f"\n\nQuestion: {question}"


def _example() -> list[Message]:
    passages = [
        Citation(number=1, source="library.md", heading="Library > Hours", chunk=0, score=1.0,
                 text="The town library opens at 9 a.m. on weekdays and at 10 a.m. on Saturdays."),
        Citation(number=2, source="library.md", heading="Library > Events", chunk=1, score=1.0,
                 text="Story time for children is held every Wednesday afternoon."),
        Citation(number=3, source="library.md", heading="Library > History", chunk=2, score=1.0,
                 text="The library building was finished in 1911 and is made of red brick."),
    ]  # fmt: skip
    reply = (
        '{"statements": [{"text": "The library opens at 9 a.m. on weekdays.", "source": 1}, '
        '{"text": "Its building was finished in 1911.", "source": 3}]}'
    )
    question = "When does the library open, and how old is its building?"
    return [
        UserMessage(content=build_prompt(question, passages)),
        AssistantMessage(parts=(TextPart(text=reply),)),
    ]


def _renumber(reply: Any, passages: list[Citation]) -> tuple[list[Statement], list[Citation]]:
    """Number cited passages 1..n in order of first citation; merge repeated statements."""
    order: dict[int, int] = {}
    statements: list[Statement] = []
    for s in reply.statements:
        number = order.setdefault(s.source, len(order) + 1)
        statement = Statement(text=" ".join(s.text.split()), citation=number)
        if statement not in statements:
            statements.append(statement)
    cited = [passages[source - 1].model_copy(update={"number": n}) for source, n in order.items()]
    return statements, cited


class DocumentQA:
    """Answers questions from one namespace of vector memory, citing the chunks it used."""

    def __init__(
        self,
        model: Model,
        retriever: Retriever,
        *,
        namespace: str,
        top_k: int = 4,
        max_tokens: int = 320,
        frequency_penalty: float | None = 0.5,
        retries: int = 1,
        name: str = "document-qa",
    ) -> None:
        self.model = model
        self.retriever = retriever
        self.namespace = namespace
        self.top_k = top_k
        self.settings = ModelSettings(max_tokens=max_tokens, frequency_penalty=frequency_penalty)
        self.retries = retries
        self.name = name

    async def ask(self, question: str) -> GroundedAnswer:
        """Retrieve, answer, and map the cited numbers back to chunks."""
        question = question.strip()
        if not question:
            raise ValueError("the question is empty")
        # A run is its own conversation unless the caller opened one (keel.observe.conversation).
        with (
            conversation(uuid.uuid4().hex),
            _tracer.start_as_current_span(f"invoke_agent {self.name}") as span,
        ):
            span.set_attribute(sc.GEN_AI_OPERATION_NAME, sc.OPERATION_INVOKE_AGENT)
            span.set_attribute(sc.GEN_AI_AGENT_NAME, self.name)
            span.set_attribute(sc.GEN_AI_REQUEST_MODEL, self.model.name)
            hits = await self.retriever.retrieve(question, self.namespace, self.top_k)
            passages = [_citation(i, hit) for i, hit in enumerate(hits, start=1)]
            if not passages:
                return GroundedAnswer(
                    question=question,
                    statements=[],
                    citations=[],
                    retrieved=[],
                    model_name=self.model.name,
                )
            messages: list[Message] = [
                SystemMessage(content=SYSTEM_PROMPT),
                *_example(),
                UserMessage(content=build_prompt(question, passages)),
            ]
            result = await request_structured(
                self.model,
                messages,
                reply_type(len(passages)),
                settings=self.settings,
                retries=self.retries,
            )
            statements, cited = _renumber(result.output, passages)
            span.set_attribute(sc.KEEL_CITATIONS, [c.label for c in cited])
            return GroundedAnswer(
                question=question,
                statements=statements,
                citations=cited,
                retrieved=passages,
                model_name=self.model.name,
                usage=result.usage,
            )
