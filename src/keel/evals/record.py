"""Recording a run: every model request and response, retrieval and tool result, in SQLite.

``RecordingModel``, ``RecordingRetriever`` and ``RecordingToolRegistry`` wrap the real components
and append each exchange (request and response) to a ``Recorder``; ``RecordStore`` keeps finished
runs in one SQLite file (``recordings.db`` under the data directory), keyed by run id. Requests are
kept too, so a replay can tell when a run asks for something other than what was recorded.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from keel.errors import ConfigError, RecordingNotFoundError, StoreError
from keel.llm.base import Model
from keel.llm.messages import (
    Message,
    ModelSettings,
    Response,
    ResponseDone,
    StreamEvent,
    ToolCallPart,
    ToolDefinition,
)
from keel.llm.wrapper import WrapperModel
from keel.memory.base import Hit, MetadataValue
from keel.memory.retrieval import Retriever
from keel.tools.registry import ToolRegistry, ToolResult

if TYPE_CHECKING:
    from keel.graph.agent import Agent, AgentResult
    from keel.graph.grounded import DocumentQA, GroundedAnswer

__all__ = [
    "RecordStore",
    "RecordedRun",
    "RecordedStep",
    "Recorder",
    "RecordingModel",
    "RecordingRetriever",
    "RecordingToolRegistry",
    "agent_output",
    "model_request",
    "record_agent",
    "record_ask",
    "retrieval_request",
    "tool_request",
]

StepKind = Literal["model", "tool", "retrieval"]
RunKind = Literal["ask", "agent"]
MIN_PREFIX = 6


class RecordedStep(BaseModel):
    """One exchange of a run, numbered from 1 in the order it finished."""

    seq: int
    kind: StepKind
    request: dict[str, Any]
    response: dict[str, Any]


class RecordedRun(BaseModel):
    """A whole run: what was run (``kind`` and ``meta``), its steps and its final output."""

    run_id: str
    kind: RunKind
    created: float = Field(default_factory=time.time)
    meta: dict[str, Any] = Field(default_factory=dict)
    steps: list[RecordedStep] = Field(default_factory=list)
    output: dict[str, Any] | None = None
    error: str | None = None

    def of_kind(self, kind: StepKind) -> list[RecordedStep]:
        return [s for s in self.steps if s.kind == kind]


def model_request(
    messages: Sequence[Message],
    tools: Sequence[ToolDefinition],
    output_schema: dict[str, Any] | None,
    settings: ModelSettings | None,
) -> dict[str, Any]:
    """A model request as plain JSON data, the form recorded and compared on replay."""
    return {
        "messages": [m.model_dump(mode="json") for m in messages],
        "tools": [t.model_dump(mode="json") for t in tools],
        "output_schema": output_schema,
        "settings": settings.model_dump(mode="json") if settings is not None else None,
    }


def retrieval_request(
    query: str, namespace: str, k: int, where: Mapping[str, MetadataValue] | None
) -> dict[str, Any]:
    return {"query": query, "namespace": namespace, "k": k, "where": dict(where or {})}


def tool_request(call: ToolCallPart) -> dict[str, Any]:
    return {"id": call.id, "name": call.name, "arguments": call.arguments}


def _tool_response(result: ToolResult) -> dict[str, Any]:
    try:
        value = json.loads(json.dumps(result.value))
    except (TypeError, ValueError):
        value = None
    return {
        "value": value,
        "error": result.error,
        "text": result.content(),
        "attempts": result.attempts,
        "truncated": result.truncated,
    }


class Recorder:
    """Collects the steps of one run as they happen."""

    def __init__(self, kind: RunKind, meta: Mapping[str, Any] | None = None) -> None:
        self.run = RecordedRun(run_id=uuid.uuid4().hex, kind=kind, meta=dict(meta or {}))

    @property
    def run_id(self) -> str:
        return self.run.run_id

    def add(self, kind: StepKind, request: dict[str, Any], response: dict[str, Any]) -> None:
        seq = len(self.run.steps) + 1
        self.run.steps.append(RecordedStep(seq=seq, kind=kind, request=request, response=response))


class RecordingModel(WrapperModel):
    """Passes every call to the wrapped model and records the request and the response."""

    def __init__(self, wrapped: Model, recorder: Recorder) -> None:
        super().__init__(wrapped)
        self.recorder = recorder

    async def request(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolDefinition] = (),
        output_schema: dict[str, Any] | None = None,
        settings: ModelSettings | None = None,
    ) -> Response:
        response = await self.wrapped.request(
            messages, tools=tools, output_schema=output_schema, settings=settings
        )
        request = model_request(messages, tools, output_schema, settings)
        self.recorder.add("model", request, response.model_dump(mode="json"))
        return response

    async def stream(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolDefinition] = (),
        output_schema: dict[str, Any] | None = None,
        settings: ModelSettings | None = None,
    ) -> AsyncIterator[StreamEvent]:
        async for event in self.wrapped.stream(
            messages, tools=tools, output_schema=output_schema, settings=settings
        ):
            if isinstance(event, ResponseDone):
                request = model_request(messages, tools, output_schema, settings)
                self.recorder.add("model", request, event.response.model_dump(mode="json"))
            yield event


class RecordingRetriever(Retriever):
    """A ``Retriever`` that asks the wrapped one and records the query and the hits."""

    def __init__(self, wrapped: Retriever, recorder: Recorder) -> None:
        # Deliberately not calling Retriever.__init__: every call goes to ``wrapped``.
        self.wrapped = wrapped
        self.recorder = recorder
        self.mode = wrapped.mode

    async def retrieve(
        self,
        query: str,
        namespace: str,
        k: int,
        where: Mapping[str, MetadataValue] | None = None,
    ) -> list[Hit]:
        hits = await self.wrapped.retrieve(query, namespace, k, where)
        response = {"hits": [h.model_dump(mode="json") for h in hits]}
        self.recorder.add("retrieval", retrieval_request(query, namespace, k, where), response)
        return hits


class RecordingToolRegistry(ToolRegistry):
    """A registry with the same tools (the versions calls would use) that records each call.

    It shares the wrapped registry's call settings (secrets, redaction, timeouts), so a call
    behaves exactly as it would have; the registry's executor is not touched.
    """

    def __init__(self, wrapped: ToolRegistry, recorder: Recorder) -> None:
        super().__init__()
        for tool in wrapped.tools():
            self.add(tool)
        self.settings = wrapped.settings
        self.recorder = recorder

    async def call(self, call: ToolCallPart) -> ToolResult:
        result = await super().call(call)
        self.recorder.add("tool", tool_request(call), _tool_response(result))
        return result


# The store ---------------------------------------------------------------------------------

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS runs (
        run_id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        created REAL NOT NULL,
        meta TEXT NOT NULL,
        output TEXT,
        error TEXT
    )""",
    """CREATE TABLE IF NOT EXISTS steps (
        run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        kind TEXT NOT NULL,
        request TEXT NOT NULL,
        response TEXT NOT NULL,
        PRIMARY KEY (run_id, seq)
    )""",
)


class RecordStore:
    """Recorded runs in one SQLite file (created on first save)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def _connect(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=10)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA foreign_keys=ON")
            for statement in _SCHEMA:
                db.execute(statement)
        except (sqlite3.Error, OSError) as e:
            raise StoreError(f"cannot open the recordings file {self.path}: {e}") from None
        return db

    def save(self, run: RecordedRun) -> None:
        with closing(self._connect()) as db, db:
            db.execute("DELETE FROM runs WHERE run_id = ?", (run.run_id,))
            db.execute(
                "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?)",
                (
                    run.run_id,
                    run.kind,
                    run.created,
                    json.dumps(run.meta),
                    json.dumps(run.output) if run.output is not None else None,
                    run.error,
                ),
            )
            db.executemany(
                "INSERT INTO steps VALUES (?, ?, ?, ?, ?)",
                [
                    (run.run_id, s.seq, s.kind, json.dumps(s.request), json.dumps(s.response))
                    for s in run.steps
                ],
            )

    def _resolve(self, db: sqlite3.Connection, run_id: str) -> str:
        run_id = run_id.strip().lower()
        if len(run_id) < MIN_PREFIX:
            raise ConfigError(f"give at least {MIN_PREFIX} characters of the run id")
        rows = db.execute(
            "SELECT run_id FROM runs WHERE run_id LIKE ? || '%' ESCAPE '\\'",
            (run_id.replace("%", "\\%").replace("_", "\\_"),),
        ).fetchall()
        if not rows:
            raise RecordingNotFoundError(
                f"no recorded run {run_id} in {self.path}",
                hint="record one with: keel ask --record ...; list them with keel replay --list",
            )
        if len(rows) > 1:
            raise RecordingNotFoundError(f"run id prefix {run_id} is ambiguous: give more of it")
        found: str = rows[0][0]
        return found

    def load(self, run_id: str) -> RecordedRun:
        """The run with this id, or with this unique id prefix (at least 6 characters)."""
        if not self.path.is_file():
            raise RecordingNotFoundError(f"no runs recorded yet (no file {self.path})")
        with closing(self._connect()) as db:
            full = self._resolve(db, run_id)
            kind, created, meta, output, error = db.execute(
                "SELECT kind, created, meta, output, error FROM runs WHERE run_id = ?", (full,)
            ).fetchone()
            steps = [
                RecordedStep(
                    seq=seq, kind=k, request=json.loads(request), response=json.loads(response)
                )
                for seq, k, request, response in db.execute(
                    "SELECT seq, kind, request, response FROM steps WHERE run_id = ? ORDER BY seq",
                    (full,),
                )
            ]
        return RecordedRun(
            run_id=full,
            kind=kind,
            created=created,
            meta=json.loads(meta),
            steps=steps,
            output=json.loads(output) if output is not None else None,
            error=error,
        )

    def runs(self, limit: int = 20) -> list[RecordedRun]:
        """The most recent runs, newest first, without their steps."""
        if not self.path.is_file():
            return []
        with closing(self._connect()) as db:
            rows = db.execute(
                "SELECT run_id, kind, created, meta, output, error FROM runs "
                "ORDER BY created DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [
            RecordedRun(
                run_id=r[0],
                kind=r[1],
                created=r[2],
                meta=json.loads(r[3]),
                output=json.loads(r[4]) if r[4] is not None else None,
                error=r[5],
            )
            for r in rows
        ]


# Recording the two kinds of runs -------------------------------------------------------------


def agent_output(result: AgentResult) -> dict[str, Any]:
    """What an agent run produced, as recorded (and compared on replay)."""
    calls = [
        tool_request(c) for m in result.messages if m.role == "assistant" for c in m.tool_calls
    ]
    return {"output": result.output, "tool_calls": calls, "steps": result.steps}


async def record_ask(
    qa: DocumentQA, question: str, store: RecordStore, *, meta: Mapping[str, Any] | None = None
) -> tuple[GroundedAnswer, str]:
    """Answer ``question`` with ``qa`` while recording every step; returns the answer and the
    run id. The run is saved even when it fails (with its error), so it can be inspected."""
    from keel.graph.grounded import DocumentQA

    settings = qa.settings
    recorder = Recorder(
        "ask",
        {
            **(meta or {}),
            "question": question,
            "namespace": qa.namespace,
            "top_k": qa.top_k,
            "max_tokens": settings.max_tokens,
            "frequency_penalty": settings.frequency_penalty,
            "retries": qa.retries,
            "name": qa.name,
            "model": qa.model.name,
        },
    )
    recording = DocumentQA(
        RecordingModel(qa.model, recorder),
        RecordingRetriever(qa.retriever, recorder),
        namespace=qa.namespace,
        top_k=qa.top_k,
        max_tokens=settings.max_tokens or 320,
        frequency_penalty=settings.frequency_penalty,
        retries=qa.retries,
        name=qa.name,
    )
    try:
        answer = await recording.ask(question)
    except Exception as e:
        recorder.run.error = f"{type(e).__name__}: {e}"
        store.save(recorder.run)
        raise
    recorder.run.output = answer.model_dump(mode="json")
    store.save(recorder.run)
    return answer, recorder.run_id


async def record_agent(
    agent: Agent,
    prompt: str | Sequence[Message],
    store: RecordStore,
    *,
    meta: Mapping[str, Any] | None = None,
) -> tuple[AgentResult, str]:
    """Run ``agent`` on ``prompt`` while recording every model call and tool result."""
    from keel.graph.agent import Agent

    messages = (
        [{"role": "user", "content": prompt}]
        if isinstance(prompt, str)
        else [m.model_dump(mode="json") for m in prompt]
    )
    recorder = Recorder(
        "agent",
        {
            **(meta or {}),
            "prompt": messages,
            "system_prompt": agent.system_prompt,
            "max_steps": agent.max_steps,
            "settings": agent.settings.model_dump(mode="json") if agent.settings else None,
            "name": agent.name,
            "model": agent.model.name,
        },
    )
    recording = Agent(
        RecordingModel(agent.model, recorder),
        RecordingToolRegistry(agent.tools, recorder),
        system_prompt=agent.system_prompt,
        max_steps=agent.max_steps,
        settings=agent.settings,
        name=agent.name,
    )
    try:
        result = await recording.run(prompt)
    except Exception as e:
        recorder.run.error = f"{type(e).__name__}: {e}"
        store.save(recorder.run)
        raise
    recorder.run.output = agent_output(result)
    store.save(recorder.run)
    return result, recorder.run_id
