"""Running a dataset: each case N times against its target, every run through every check,
then pass rates with Wilson intervals and pass^k per case.

A target becomes a ``Subject``: an async function from (case, model) to an ``Outcome``. Runs are
sequential (a local model serves one request at a time); with a sampling temperature each run gets
its own seed, so runs are independent draws yet the whole eval is repeatable. Given an
``Executor`` (a Ray cluster), the runs are its items instead (``keel.distributed.evals``).
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel.errors import DatasetError, KeelError
from keel.evals.checks import CitedSource, Outcome, run_check
from keel.evals.dataset import (
    AgentTarget,
    Case,
    Dataset,
    FunctionTarget,
    JudgeCheck,
    ModelTarget,
    QATarget,
    resolve_reference,
)
from keel.evals.report import CaseResult, EvalReport, RunRecord
from keel.evals.stats import pass_hat_k, wilson_interval
from keel.llm.base import Model
from keel.llm.messages import (
    AssistantMessage,
    Message,
    ModelSettings,
    Response,
    SystemMessage,
    TextPart,
    ToolDefinition,
    UserMessage,
)
from keel.llm.wrapper import WrapperModel

if TYPE_CHECKING:
    from keel.distributed.base import Executor, ProgressCallback
    from keel.distributed.evals import EvalWork
    from keel.evals.record import RecordStore
    from keel.memory.retrieval import Retriever
    from keel.tools.registry import ToolRegistry

__all__ = [
    "DEMO_CORPUS",
    "Progress",
    "SamplingModel",
    "Subject",
    "case_messages",
    "function_subject",
    "run_dataset",
    "subject_for",
]

DEMO_CORPUS = Path(__file__).parents[1] / "demo" / "corpus"

Subject = Callable[[Case, Model], Awaitable[Outcome]]
"""Runs one case once with the given model."""
Progress = Callable[[Case, int, bool], None]
"""Called after each run with the case, the run number (from 1) and whether it passed."""


class SamplingModel(WrapperModel):
    """Forces a sampling temperature and seed on every call (one seed per eval run)."""

    def __init__(self, wrapped: Model, *, temperature: float, seed: int) -> None:
        super().__init__(wrapped)
        self.temperature = temperature
        self.seed = seed

    async def request(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolDefinition] = (),
        output_schema: dict[str, Any] | None = None,
        settings: ModelSettings | None = None,
    ) -> Response:
        base = settings if settings is not None else ModelSettings()
        forced = base.model_copy(update={"temperature": self.temperature, "seed": self.seed})
        return await self.wrapped.request(
            messages, tools=tools, output_schema=output_schema, settings=forced
        )

    async def aclose(self) -> None:
        """The wrapped model outlives one run: it is closed by whoever opened it."""


def case_messages(case: Case, system_prompt: str = "") -> list[Message]:
    """The case's input as messages, after an optional system prompt."""
    messages: list[Message] = [SystemMessage(content=system_prompt)] if system_prompt else []
    if isinstance(case.input, str):
        messages.append(UserMessage(content=case.input))
        return messages
    for m in case.input:
        if m.role == "system":
            messages.append(SystemMessage(content=m.content))
        elif m.role == "user":
            messages.append(UserMessage(content=m.content))
        else:
            messages.append(AssistantMessage(parts=(TextPart(text=m.content),)))
    return messages


def _qa_subject(
    retriever: Retriever, namespace: str, top_k: int, docs: Path, record: RecordStore | None
) -> Subject:
    from keel.graph.grounded import DocumentQA

    async def run(case: Case, model: Model) -> Outcome:
        qa = DocumentQA(model, retriever, namespace=namespace, top_k=top_k)
        run_id = None
        if record is not None:
            from keel.evals.record import record_ask

            answer, run_id = await record_ask(
                qa, case.prompt, record, meta={"docs": str(docs), "case": case.id}
            )
        else:
            answer = await qa.ask(case.prompt)
        return Outcome(
            output=answer.answer,
            citations=tuple(CitedSource(c.source, c.heading) for c in answer.citations),
            data=answer.model_dump(mode="json"),
            usage_tokens=answer.usage.total_tokens,
            run_id=run_id,
        )

    return run


def _agent_subject(target: AgentTarget, record: RecordStore | None) -> Subject:
    from keel.graph.agent import Agent
    from keel.tools.registry import ToolRegistry

    tools: ToolRegistry | None = None
    if target.tools is not None:
        found = resolve_reference(target.tools, what="tool registry")
        tools = found() if callable(found) and not isinstance(found, ToolRegistry) else found
        if not isinstance(tools, ToolRegistry):
            raise DatasetError(f"{target.tools} is not a ToolRegistry (nor returns one)")

    async def run(case: Case, model: Model) -> Outcome:
        agent = Agent(model, tools, system_prompt=target.system_prompt, max_steps=target.max_steps)
        prompt = case_messages(case)
        run_id = None
        if record is not None:
            from keel.evals.record import record_agent

            result, run_id = await record_agent(agent, prompt, record, meta={"case": case.id})
        else:
            result = await agent.run(prompt)
        calls = tuple(
            c for m in result.messages if isinstance(m, AssistantMessage) for c in m.tool_calls
        )
        return Outcome(
            output=result.output,
            tool_calls=calls,
            messages=result.messages,
            usage_tokens=result.usage.total_tokens,
            run_id=run_id,
        )

    return run


def _model_subject(target: ModelTarget) -> Subject:
    async def run(case: Case, model: Model) -> Outcome:
        response = await model.request(
            case_messages(case, target.system_prompt), output_schema=target.output_schema
        )
        return Outcome(
            output=response.message.text,
            tool_calls=tuple(response.message.tool_calls),
            usage_tokens=response.usage.total_tokens,
        )

    return run


def function_subject(reference: str) -> Subject:
    """A subject from a user's ``function(model, case)`` returning an ``Outcome`` or text."""
    function = resolve_reference(reference, what="target function")
    if not callable(function):
        raise DatasetError(f"target function {reference} is not callable")

    async def run(case: Case, model: Model) -> Outcome:
        result = function(model, case)
        if inspect.isawaitable(result):
            result = await result
        if isinstance(result, Outcome):
            return result
        if isinstance(result, str):
            return Outcome(output=result)
        raise KeelError(f"{reference} returned {type(result).__name__}, not an Outcome or str")

    return run


@dataclass
class OpenedSubject:
    """A subject and what to close when the eval is done."""

    subject: Subject
    close: Callable[[], Awaitable[None]]
    description: str


async def _nothing() -> None:
    return None


async def subject_for(
    dataset: Dataset,
    *,
    settings: Any = None,
    record: RecordStore | None = None,
    ingest: Callable[[Any, Path], Awaitable[object]] | None = None,
) -> OpenedSubject:
    """The subject of ``dataset.target``. A ``qa`` target opens memory from ``settings`` (a
    ``KeelSettings``) and ingests its documents first (with ``ingest(memory, docs)`` if given)."""
    target = dataset.target
    if isinstance(target, QATarget):
        from keel.memory.retrieval import Retriever
        from keel.stack import docs_namespace, open_memory

        docs = DEMO_CORPUS if target.docs == "demo" else dataset.base_dir() / target.docs
        if not docs.exists():
            raise DatasetError(f"{dataset.path}: target.docs: no such file or folder: {docs}")
        if settings is None:
            from keel.config import load_settings

            settings = load_settings()
        memory = open_memory(settings)
        try:
            if ingest is not None:
                await ingest(memory, docs)
            else:
                await memory.ingest(docs)
        except BaseException:
            await memory.close()
            raise
        top_k = target.top_k or settings.memory.top_k
        retriever = Retriever(memory.store, memory.embedder)
        subject = _qa_subject(retriever, docs_namespace(docs), top_k, docs, record)
        return OpenedSubject(subject, memory.close, f"qa over {docs.name}")
    if isinstance(target, AgentTarget):
        return OpenedSubject(_agent_subject(target, record), _nothing, "agent")
    if isinstance(target, ModelTarget):
        return OpenedSubject(_model_subject(target), _nothing, "model")
    assert isinstance(target, FunctionTarget)
    return OpenedSubject(function_subject(target.function), _nothing, target.function)


async def _run_once(
    case: Case,
    subject: Subject,
    model: Model,
    judges: Callable[[JudgeCheck], Model | None],
) -> RunRecord:
    try:
        outcome = await subject(case, model)
    except Exception as e:  # one failed run is a failed run, not a failed eval
        message = f"{type(e).__name__}: {e}"
        return RunRecord(passed=False, failures=[f"run failed: {message}"], error=message)
    failures = []
    for check in case.checks:
        judge = judges(check) if isinstance(check, JudgeCheck) else None
        result = await run_check(check, case, outcome, judge)
        if not result.passed:
            failures.append(f"{result.check}: {result.detail}" if result.detail else result.check)
    return RunRecord(
        passed=not failures, failures=failures, output=outcome.output[:2000], run_id=outcome.run_id
    )


def _case_result(dataset: Dataset, case: Case, records: list[RunRecord]) -> CaseResult:
    n = len(records)
    passes = sum(r.passed for r in records)
    interval = wilson_interval(passes, n, dataset.defaults.confidence)
    threshold = dataset.threshold_of(case)
    k = dataset.defaults.pass_k
    return CaseResult(
        id=case.id,
        prompt=case.prompt,
        runs=n,
        passes=passes,
        threshold=threshold,
        pass_rate=interval.rate,
        ci_low=interval.low,
        ci_high=interval.high,
        pass_k=pass_hat_k(passes, n, k),
        k=k,
        passed=interval.low >= threshold,
        records=records,
    )


async def _run_on_executor(
    executor: Executor,
    work: EvalWork,
    planned: list[tuple[Case, int]],
    temperature: float | None,
    seed: int,
    progress: ProgressCallback | None,
) -> tuple[list[RunRecord], str]:
    """Every (case, run) as one item on ``executor``; a failed item is a failed run."""
    import functools

    from keel.distributed.evals import EvalItem, release_targets, run_item, run_item_blocking
    from keel.distributed.local import LocalExecutor

    items = [
        EvalItem(case.id, i, temperature, seed + i if temperature is not None else 0)
        for case, i in planned
    ]
    in_process = isinstance(executor, LocalExecutor)
    body: Callable[[EvalItem], Any] = functools.partial(
        run_item if in_process else run_item_blocking, work
    )
    try:
        results = await executor.map(body, items, progress)
    finally:
        if in_process:
            await release_targets(work)
    records: list[RunRecord] = []
    model_name = ""
    for result in results:
        if result.ok:
            record, model_name = result.unwrap()
            records.append(record)
        else:
            message = f"{result.error_type}: {result.error}"
            records.append(
                RunRecord(passed=False, failures=[f"run failed: {message}"], error=message)
            )
    return records, model_name


async def run_dataset(
    dataset: Dataset,
    model: Model | None,
    subject: Subject | None,
    *,
    runs: int | None = None,
    judge: Model | Callable[[JudgeCheck], Model | None] | None = None,
    temperature: float | None = None,
    seed: int = 0,
    progress: Progress | None = None,
    cases: Sequence[Case] | None = None,
    target: str = "",
    executor: Executor | None = None,
    work: EvalWork | None = None,
    executor_progress: ProgressCallback | None = None,
) -> EvalReport:
    """Run every case of ``dataset`` (or ``cases``) ``runs`` times (default: the dataset's) and
    report pass rates. ``temperature`` (default: the dataset's) is forced on every model call,
    with seed ``seed + run number``; ``judge`` grades ``judge`` checks (default: ``model``).

    With an ``executor``, every (case, run) pair is one item on it, described by ``work`` (a
    picklable ``keel.distributed.evals.EvalWork``): the workers build the model, the subject and
    the judges themselves, so ``model``, ``subject`` and ``judge`` are not used and may be None.
    ``executor_progress`` then follows the items as they complete (``progress`` is not called).
    The report is computed here from the returned runs, exactly as without an executor."""
    started = time.perf_counter()
    temperature = temperature if temperature is not None else dataset.defaults.temperature
    selected = list(cases if cases is not None else dataset.cases)
    planned = [
        (case, i)
        for case in selected
        for i in range(1, (runs if runs is not None else dataset.runs_of(case)) + 1)
    ]
    by_case: dict[str, list[RunRecord]] = {case.id: [] for case in selected}
    if executor is not None:
        if work is None:
            raise DatasetError("run_dataset with an executor needs work=EvalWork(...)")
        records, model_name = await _run_on_executor(
            executor, work, planned, temperature, seed, executor_progress
        )
        for (case, _), record in zip(planned, records, strict=True):
            by_case[case.id].append(record)
        model_name = model_name or (model.name if model is not None else work.model or "")
    else:
        if model is None or subject is None:
            raise DatasetError("run_dataset without an executor needs a model and a subject")
        evaluated: Model = model
        if judge is None:
            judges: Callable[[JudgeCheck], Model | None] = lambda check: evaluated  # noqa: E731
        elif isinstance(judge, Model):
            judges = lambda check: judge  # noqa: E731
        else:
            judges = judge
        for case, i in planned:
            run_model: Model = model
            if temperature is not None:
                run_model = SamplingModel(model, temperature=temperature, seed=seed + i)
            record = await _run_once(case, subject, run_model, judges)
            by_case[case.id].append(record)
            if progress is not None:
                progress(case, i, record.passed)
        model_name = model.name
    return EvalReport(
        dataset=dataset.name,
        description=dataset.description,
        model=model_name,
        target=target or dataset.target.kind,
        confidence=dataset.defaults.confidence,
        temperature=temperature,
        duration_s=time.perf_counter() - started,
        cases=[_case_result(dataset, case, by_case[case.id]) for case in selected],
    )
