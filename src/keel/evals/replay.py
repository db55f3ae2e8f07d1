"""Replaying a recorded run offline: the recorded responses stand in for the model, the
retriever and the tools, in order, and any request that differs from the recording is a
``ReplayDivergenceError`` naming the step.

A replay runs the same code as the original run (``DocumentQA.ask`` or ``Agent.run``), so it
proves the run is reproducible and shows where a change to prompts or code makes it diverge.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter

from keel.errors import ReplayDivergenceError
from keel.evals.record import (
    RecordedRun,
    RecordedStep,
    agent_output,
    model_request,
    retrieval_request,
    tool_request,
)
from keel.llm.base import Model
from keel.llm.messages import Message, ModelSettings, Response, ToolCallPart, ToolDefinition
from keel.memory.base import Hit, MetadataValue
from keel.memory.retrieval import Retriever
from keel.tools.registry import ToolRegistry, ToolResult

__all__ = [
    "ReplayModel",
    "ReplayResult",
    "ReplayRetriever",
    "ReplayToolRegistry",
    "Replayer",
    "replay_run",
]

_messages = TypeAdapter(list[Message])


def _difference(recorded: Any, actual: Any, path: str = "") -> str:
    """Where two JSON values first differ, in a few words."""
    if isinstance(recorded, dict) and isinstance(actual, dict):
        for key in sorted(set(recorded) | set(actual), key=str):
            if recorded.get(key) != actual.get(key):
                return _difference(recorded.get(key), actual.get(key), f"{path}.{key}")
    if isinstance(recorded, list) and isinstance(actual, list):
        for i, (r, a) in enumerate(zip(recorded, actual, strict=False)):
            if r != a:
                return _difference(r, a, f"{path}[{i}]")
        if len(recorded) != len(actual):
            return f"{path or 'value'}: {len(recorded)} items recorded, {len(actual)} now"
    r_text = json.dumps(recorded, default=str)[:120]
    a_text = json.dumps(actual, default=str)[:120]
    return f"{path.lstrip('.') or 'value'}: recorded {r_text}, now {a_text}"


class Replayer:
    """Hands out the recorded steps of one run in order, and checks each request."""

    def __init__(self, run: RecordedRun) -> None:
        self.run = run
        self._next: dict[str, int] = {"model": 0, "retrieval": 0}
        self._tools_used: set[int] = set()

    def next_step(self, kind: str, request: dict[str, Any]) -> RecordedStep:
        steps = self.run.of_kind(kind)  # type: ignore[arg-type]
        index = self._next[kind]
        if index >= len(steps):
            raise ReplayDivergenceError(
                f"replay of run {self.run.run_id[:12]} diverged: {kind} call {index + 1} was "
                f"made, but the recording has only {len(steps)}",
                step=len(self.run.steps) + 1,
            )
        step = steps[index]
        self._next[kind] = index + 1
        if step.request != request:
            raise ReplayDivergenceError(
                f"replay of run {self.run.run_id[:12]} diverged at step {step.seq} ({kind} call "
                f"{index + 1}): the request differs from the recording at "
                f"{_difference(step.request, request)}",
                step=step.seq,
                hint="the prompt, settings or code changed since the recording",
            )
        return step

    def tool_step(self, call: ToolCallPart) -> RecordedStep:
        request = tool_request(call)
        steps = self.run.of_kind("tool")
        for step in steps:
            if step.seq in self._tools_used or step.request.get("id") != call.id:
                continue
            if step.request != request:
                raise ReplayDivergenceError(
                    f"replay of run {self.run.run_id[:12]} diverged at step {step.seq} (tool "
                    f"call {call.name}): {_difference(step.request, request)}",
                    step=step.seq,
                )
            self._tools_used.add(step.seq)
            return step
        raise ReplayDivergenceError(
            f"replay of run {self.run.run_id[:12]} diverged: tool call {call.name} "
            f"(id {call.id}) was not recorded",
            step=len(self.run.steps) + 1,
        )

    def assert_done(self) -> None:
        """Raise when recorded steps were never asked for (the replay did less than the run)."""
        left = [
            s
            for s in self.run.steps
            if (s.kind == "tool" and s.seq not in self._tools_used)
            or (s.kind != "tool" and self.run.of_kind(s.kind).index(s) >= self._next[s.kind])
        ]
        if left:
            raise ReplayDivergenceError(
                f"replay of run {self.run.run_id[:12]} diverged: it ended before step "
                f"{left[0].seq} ({left[0].kind}); {len(left)} recorded steps were not used",
                step=left[0].seq,
            )


class ReplayModel(Model):
    """Answers each request with the next recorded response, if the request is the recorded one."""

    def __init__(self, replayer: Replayer, name: str) -> None:
        self.replayer = replayer
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    async def request(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolDefinition] = (),
        output_schema: dict[str, Any] | None = None,
        settings: ModelSettings | None = None,
    ) -> Response:
        request = model_request(messages, tools, output_schema, settings)
        step = self.replayer.next_step("model", request)
        return Response.model_validate(step.response)


class ReplayRetriever(Retriever):
    """Returns the recorded hits of each retrieval, in order (no embedder, no store)."""

    def __init__(self, replayer: Replayer) -> None:
        # Deliberately not calling Retriever.__init__: nothing is searched.
        self.replayer = replayer
        self.mode = "vector"

    async def retrieve(
        self,
        query: str,
        namespace: str,
        k: int,
        where: Mapping[str, MetadataValue] | None = None,
    ) -> list[Hit]:
        step = self.replayer.next_step("retrieval", retrieval_request(query, namespace, k, where))
        return [Hit.model_validate(h) for h in step.response["hits"]]


class ReplayToolRegistry(ToolRegistry):
    """Offers the recorded tool definitions and returns recorded results instead of running."""

    def __init__(self, replayer: Replayer) -> None:
        super().__init__()
        self.replayer = replayer
        first = replayer.run.of_kind("model")
        tools = first[0].request.get("tools", []) if first else []
        self._definitions = [ToolDefinition.model_validate(t) for t in tools]

    def definitions(self) -> list[ToolDefinition]:
        return list(self._definitions)

    async def call(self, call: ToolCallPart) -> ToolResult:
        recorded = self.replayer.tool_step(call).response
        return ToolResult(
            call.id,
            call.name,
            value=recorded.get("value"),
            error=recorded.get("error"),
            text=recorded.get("text") if recorded.get("error") is None else None,
            attempts=int(recorded.get("attempts", 1)),
            truncated=bool(recorded.get("truncated", False)),
        )


@dataclass(frozen=True)
class ReplayResult:
    """The replayed output next to the recorded one."""

    run: RecordedRun
    output: dict[str, Any]

    @property
    def identical(self) -> bool:
        return self.output == self.run.output

    @property
    def text(self) -> str:
        """The answer text of the replayed run."""
        return str(self.output.get("answer", self.output.get("output", "")))


async def replay_run(run: RecordedRun) -> ReplayResult:
    """Re-execute ``run`` from its recording: offline, deterministic, no model or tools needed."""
    replayer = Replayer(run)
    first = run.of_kind("model")
    name = str(first[0].response.get("model_name")) if first else str(run.meta.get("model", "?"))
    model = ReplayModel(replayer, str(run.meta.get("model", name)))
    meta = run.meta
    output: dict[str, Any]
    if run.kind == "ask":
        from keel.graph.grounded import DocumentQA

        qa = DocumentQA(
            model,
            ReplayRetriever(replayer),
            namespace=str(meta["namespace"]),
            top_k=int(meta["top_k"]),
            max_tokens=int(meta.get("max_tokens") or 320),
            frequency_penalty=meta.get("frequency_penalty"),
            retries=int(meta.get("retries", 1)),
            name=str(meta.get("name", "document-qa")),
        )
        answer = await qa.ask(str(meta["question"]))
        output = answer.model_dump(mode="json")
    else:
        from keel.graph.agent import Agent

        settings = meta.get("settings")
        agent = Agent(
            model,
            ReplayToolRegistry(replayer),
            system_prompt=str(meta.get("system_prompt", "")),
            max_steps=int(meta.get("max_steps", 8)),
            settings=ModelSettings.model_validate(settings) if settings else None,
            name=str(meta.get("name", "agent")),
        )
        result = await agent.run(_messages.validate_python(meta["prompt"]))
        output = agent_output(result)
    replayer.assert_done()
    return ReplayResult(run=run, output=output)
