"""The document-grounded workflow: retrieve passages, then answer from them with citations.

A fixed two-step workflow rather than free tool choice, so that a very small model can carry it:
Keel retrieves; the model only has to answer from numbered passages and say which numbers it
used. The reply is constrained to a JSON schema whose citation numbers can only be those of the
passages shown, so every citation points at a real chunk.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from opentelemetry import trace
from pydantic import BaseModel, ConfigDict, Field, create_model

from keel.llm.base import Model
from keel.llm.messages import Message, ModelSettings, SystemMessage, Usage, UserMessage
from keel.llm.structured import request_structured
from keel.memory.base import Hit
from keel.memory.retrieval import Retriever
from keel.observe import semconv as sc

__all__ = ["Citation", "DocumentQA", "GroundedAnswer"]

_tracer = trace.get_tracer("keel.graph")

SYSTEM_PROMPT = (
    "You answer questions using only the numbered passages you are given. "
    "Answer in one to three sentences, then list the numbers of the passages your answer uses. "
    "If the passages do not contain the answer, say so."
)
MAX_ANSWER_CHARS = 600


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


class GroundedAnswer(BaseModel):
    """An answer, the passages it cites, and what was retrieved but not cited."""

    question: str
    answer: str
    citations: list[Citation]
    retrieved: list[Citation]
    model_name: str
    usage: Usage = Field(default_factory=Usage)


def reply_type(passages: int) -> type[BaseModel]:
    """The reply the model must give: a bounded answer and one or more real passage numbers.

    Its JSON schema (an ``enum`` of the passage numbers, a ``maxLength`` on the answer) is what
    constrains a local model's decoding, so the reply always parses and never runs past
    ``max_tokens``.
    """
    numbers = Literal.__getitem__(tuple(range(1, passages + 1)))
    return create_model(
        "CitedAnswer",
        answer=(str, Field(min_length=1, max_length=MAX_ANSWER_CHARS)),
        sources=(list[numbers], Field(min_length=1, max_length=passages)),  # type: ignore[valid-type]
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
        retries: int = 1,
        name: str = "document-qa",
    ) -> None:
        self.model = model
        self.retriever = retriever
        self.namespace = namespace
        self.top_k = top_k
        self.settings = ModelSettings(max_tokens=max_tokens)
        self.retries = retries
        self.name = name

    async def ask(self, question: str) -> GroundedAnswer:
        """Retrieve, answer, and map the cited numbers back to chunks."""
        question = question.strip()
        if not question:
            raise ValueError("the question is empty")
        with _tracer.start_as_current_span(f"invoke_agent {self.name}") as span:
            span.set_attribute(sc.GEN_AI_OPERATION_NAME, sc.OPERATION_INVOKE_AGENT)
            span.set_attribute(sc.GEN_AI_AGENT_NAME, self.name)
            span.set_attribute(sc.GEN_AI_REQUEST_MODEL, self.model.name)
            hits = await self.retriever.retrieve(question, self.namespace, self.top_k)
            passages = [_citation(i, hit) for i, hit in enumerate(hits, start=1)]
            if not passages:
                return GroundedAnswer(
                    question=question,
                    answer="The documents hold nothing relevant to this question.",
                    citations=[],
                    retrieved=[],
                    model_name=self.model.name,
                )
            reply, usage = await self._answer(question, passages)
            cited = sorted(set(reply.sources))
            span.set_attribute(sc.KEEL_CITATIONS, cited)
            return GroundedAnswer(
                question=question,
                answer=reply.answer.strip(),
                citations=[passages[n - 1] for n in cited],
                retrieved=passages,
                model_name=self.model.name,
                usage=usage,
            )

    async def _answer(self, question: str, passages: list[Citation]) -> tuple[Any, Usage]:
        messages: list[Message] = [
            SystemMessage(content=SYSTEM_PROMPT),
            UserMessage(content=build_prompt(question, passages)),
        ]
        result = await request_structured(
            self.model,
            messages,
            reply_type(len(passages)),
            settings=self.settings,
            retries=self.retries,
        )
        return result.output, result.usage
