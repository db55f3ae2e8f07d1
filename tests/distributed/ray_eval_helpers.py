"""Eval targets the Ray workers import by name (tests/distributed is on the head's PYTHONPATH)."""

from __future__ import annotations

import os

from keel.evals.checks import Outcome
from keel.evals.dataset import Case
from keel.llm.base import Model
from keel.llm.messages import UserMessage
from keel.llm.testing import FunctionModel, ModelCall


def _reply(call: ModelCall) -> str:
    """'yes' unless the run's seed is a multiple of 3: runs differ, yet every eval repeats."""
    seed = call.settings.seed if call.settings is not None else None
    return "no" if seed is not None and seed % 3 == 0 else "yes"


def seeded_model() -> FunctionModel:
    return FunctionModel(_reply, name="seeded")


async def answer(model: Model, case: Case) -> Outcome:
    """Asks the model; a case whose prompt says 'explode' raises, one saying 'die' kills the
    process it runs in (only ever run on Ray workers)."""
    if "explode" in case.prompt:
        raise RuntimeError(f"exploded on {case.id}")
    if "die" in case.prompt:
        os._exit(3)
    response = await model.request([UserMessage(content=case.prompt)])
    return Outcome(output=f"{response.message.text} pid={os.getpid()}")
