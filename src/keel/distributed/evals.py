"""``keel eval`` on an executor: every (case, run) pair is one task; the report is made here.

A task gets a picklable description of its run (``EvalItem``: case id, run number, seed,
temperature) and of the eval (``EvalWork``: the dataset source, the model and judge specs, the
settings), and builds the target itself: the dataset, the model, the subject (memory for a ``qa``
target). A model holding a live client or a llama.cpp context cannot be pickled, so it never
travels; a worker process builds it once and reuses it for every later item of the same eval
(``_TARGETS``, keyed by the eval's description). The task returns the run's ``RunRecord``; the
driver computes pass rates and intervals exactly as the in-process runner does.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from keel.errors import ConfigError, DatasetError

if TYPE_CHECKING:
    from keel.config import KeelSettings
    from keel.evals.dataset import Case, Dataset, JudgeCheck
    from keel.evals.report import RunRecord
    from keel.evals.runner import OpenedSubject
    from keel.llm.base import Model

__all__ = ["EvalItem", "EvalWork", "release_targets", "run_item", "run_item_blocking"]


@dataclass(frozen=True)
class EvalWork:
    """What every task of one eval shares: enough for a worker to build the target.

    ``dataset`` is what ``load_dataset`` takes (a file path, which workers must see at the same
    place, a 'module:name' reference, or a shipped suite's name); ``model`` and ``judge`` are model
    specs as ``--model``/``--judge`` take them (``None``: the dataset target's model factory, else
    ``settings.llm``); ``record`` is the recordings file every run is recorded into, if any.
    """

    dataset: str
    model: str | None = None
    judge: str | None = None
    settings: KeelSettings | None = None
    record: str | None = None

    def key(self) -> str:
        """A digest of this description: the worker's cache key (secrets appear masked in it)."""
        settings = self.settings.model_dump_json() if self.settings is not None else ""
        parts = (self.dataset, self.model, self.judge, self.record, settings)
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


@dataclass(frozen=True)
class EvalItem:
    """One run of one case: ``run`` counts from 1; ``temperature`` and ``seed`` are forced on
    every model call of the run when ``temperature`` is set."""

    case_id: str
    run: int
    temperature: float | None = None
    seed: int = 0


@dataclass
class _Target:
    """What a worker built for one eval: reused by every item of it this worker runs."""

    cases: dict[str, Case]
    model: Model
    opened: OpenedSubject
    settings: KeelSettings
    judge_spec: str | None
    judges: dict[str | None, Model] = field(default_factory=dict)

    def judge_for(self, check: JudgeCheck) -> Model | None:
        from keel.stack import open_model

        key = check.model if check.model is not None else self.judge_spec
        if key is None:
            return self.model
        if key not in self.judges:
            self.judges[key] = open_model(self.settings, key)
        return self.judges[key]

    async def close(self) -> None:
        for judge in self.judges.values():
            await judge.aclose()
        await self.opened.close()
        await self.model.aclose()


_TARGETS: dict[tuple[str, int], _Target] = {}
"""Targets built in this process, by (eval key, id of the event loop they live on)."""
_BUILDING: dict[tuple[str, int], asyncio.Lock] = {}
_LOOPS = threading.local()


def _open_model(dataset: Dataset, settings: KeelSettings, spec: str | None) -> Model:
    from keel.evals.dataset import resolve_reference
    from keel.llm.base import Model
    from keel.stack import open_model

    if spec is None and dataset.target.model is not None:
        factory = resolve_reference(dataset.target.model, what="model factory")
        model = factory() if callable(factory) and not isinstance(factory, Model) else factory
        if not isinstance(model, Model):
            raise ConfigError(f"{dataset.target.model} did not give a keel.llm.Model")
        return model
    return open_model(settings, spec) if spec is not None else open_model(settings)


async def _build(work: EvalWork) -> _Target:
    from keel.config import load_settings
    from keel.evals.dataset import load_dataset
    from keel.evals.runner import subject_for

    dataset = load_dataset(work.dataset)
    settings = work.settings if work.settings is not None else load_settings()
    store = None
    if work.record is not None:
        from keel.evals.record import RecordStore

        store = RecordStore(Path(work.record))
    model = _open_model(dataset, settings, work.model)
    try:
        opened = await subject_for(dataset, settings=settings, record=store)
    except BaseException:
        await model.aclose()
        raise
    return _Target({c.id: c for c in dataset.cases}, model, opened, settings, work.judge)


async def _target(work: EvalWork) -> _Target:
    key = (work.key(), id(asyncio.get_running_loop()))
    if key not in _TARGETS:
        async with _BUILDING.setdefault(key, asyncio.Lock()):  # one build, however many items
            if key not in _TARGETS:
                _TARGETS[key] = await _build(work)
    return _TARGETS[key]


async def run_item(work: EvalWork, item: EvalItem) -> tuple[RunRecord, str]:
    """A task: run ``item`` with this process's target for ``work``; the run's record and the
    evaluated model's name. A run that raises is a failed record, as in the in-process runner."""
    from keel.evals.runner import SamplingModel, _run_once

    target = await _target(work)
    case = target.cases.get(item.case_id)
    if case is None:
        raise DatasetError(f"no case {item.case_id!r} in {work.dataset}")
    model = target.model
    if item.temperature is not None:
        model = SamplingModel(model, temperature=item.temperature, seed=item.seed)
    record = await _run_once(case, target.opened.subject, model, target.judge_for)
    return record, target.model.name


def _worker_loop() -> asyncio.AbstractEventLoop:
    """This thread's event loop, kept for the life of the process: a cached model's client stays
    bound to the loop it was opened on."""
    loop: asyncio.AbstractEventLoop | None = getattr(_LOOPS, "loop", None)
    if loop is None or loop.is_closed():
        loop = asyncio.new_event_loop()
        _LOOPS.loop = loop
    return loop


def run_item_blocking(work: EvalWork, item: EvalItem) -> tuple[RunRecord, str]:
    """``run_item`` for a worker process (a Ray task): runs on the thread's persistent loop."""
    return _worker_loop().run_until_complete(run_item(work, item))


async def release_targets(work: EvalWork) -> None:
    """Close the targets built for ``work`` on the running loop of this process (after an eval on
    an in-process executor); workers of a remote executor keep theirs until they exit."""
    key = (work.key(), id(asyncio.get_running_loop()))
    _BUILDING.pop(key, None)
    target = _TARGETS.pop(key, None)
    if target is not None:
        await target.close()
