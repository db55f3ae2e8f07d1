"""The ``Checkpointer`` protocol: where a run's state after each step and its effects are kept.

A checkpoint is the state after a step plus the tasks still to run, so a run can continue from
it in another process. The effect journal holds the recorded results of side effects (and
answers to interrupts) by idempotency key, so a resumed run never performs them twice.
Backends store opaque JSON text; the engine does all (de)serialisation.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["Checkpoint", "Checkpointer", "RunStatus"]

RunStatus = Literal["running", "interrupted", "done"]


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A run after ``step`` steps: its state, the tasks to run next and why it stopped.

    ``state``, ``tasks`` and ``extra`` are JSON text written and read by the engine.
    """

    run_id: str
    step: int
    state: str
    tasks: str = "[]"
    status: RunStatus = "running"
    extra: str = "{}"
    created_at: float = field(default=0.0)


class Checkpointer(ABC):
    """Stores checkpoints and the effect journal of graph runs.

    Every backend must pass ``keel.graph.checkpoint.conformance.CheckpointerConformance``.
    """

    @abstractmethod
    async def put(self, checkpoint: Checkpoint) -> None:
        """Save a checkpoint (replacing one with the same run and step) durably."""

    @abstractmethod
    async def latest(self, run_id: str) -> Checkpoint | None:
        """The checkpoint with the highest step of a run, or None for an unknown run."""

    @abstractmethod
    async def history(self, run_id: str, *, limit: int | None = None) -> list[Checkpoint]:
        """A run's checkpoints, newest first."""

    @abstractmethod
    async def get_effect(self, run_id: str, key: str) -> str | None:
        """The journalled result (JSON text) of an effect, or None if it never completed."""

    @abstractmethod
    async def put_effect(self, run_id: str, key: str, result: str) -> None:
        """Journal an effect's result durably; a second write with the same key is ignored."""

    @abstractmethod
    async def prune(self, *, keep_last: int | None = None, older_than: float | None = None) -> int:
        """Delete all but the last ``keep_last`` checkpoints of every run, and every checkpoint
        (and effect) created more than ``older_than`` seconds ago; return how many rows went."""

    @abstractmethod
    async def delete_run(self, run_id: str) -> None:
        """Forget a run: its checkpoints and its journal."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
