"""Episodic memory: what each agent run did, and whether it worked.

A ``RunRecord`` holds a run's session, agent, task, steps (with their tool calls), outcome
(success or failure, and why), timestamps and usage. An ``EpisodicStore`` keeps them and answers
"what did I try last time, and did it work?" by session, agent, outcome and time range, and
forgets old runs by a ``RetentionPolicy``. Timestamps must carry a time zone.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Literal, Self

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from keel.memory.base import MetadataValue

__all__ = [
    "EpisodicStore",
    "Outcome",
    "RetentionPolicy",
    "RunQuery",
    "RunRecord",
    "RunUsage",
    "StepRecord",
    "ToolCallRecord",
]

Outcome = Literal["success", "failure"]


class ToolCallRecord(BaseModel):
    """One tool call of a step: its arguments and its result or error."""

    model_config = ConfigDict(frozen=True)

    name: str
    arguments: dict[str, Any] = {}
    result: str | None = None
    error: str | None = None


class StepRecord(BaseModel):
    """One step of a run: a model turn, a tool round, or any named node of a graph."""

    model_config = ConfigDict(frozen=True)

    kind: str
    content: str = ""
    tool_calls: list[ToolCallRecord] = []
    started_at: AwareDatetime
    ended_at: AwareDatetime | None = None


class RunUsage(BaseModel):
    """What a run consumed."""

    model_config = ConfigDict(frozen=True)

    input_tokens: int = Field(0, ge=0)
    output_tokens: int = Field(0, ge=0)
    model_calls: int = Field(0, ge=0)
    tool_calls: int = Field(0, ge=0)
    cost_usd: float = Field(0.0, ge=0.0)


class RunRecord(BaseModel):
    """One agent run. ``outcome`` is None while the run is in progress; ``reason`` says why it
    ended as it did (required for a failure)."""

    model_config = ConfigDict(frozen=True)

    run_id: str = Field(min_length=1)
    session_id: str
    agent: str
    task: str = ""
    steps: list[StepRecord] = []
    outcome: Outcome | None = None
    reason: str = ""
    started_at: AwareDatetime
    ended_at: AwareDatetime | None = None
    usage: RunUsage = RunUsage()
    metadata: dict[str, MetadataValue] = {}

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.outcome == "failure" and not self.reason.strip():
            raise ValueError("a failed run needs a reason")
        if self.ended_at is not None and self.ended_at < self.started_at:
            raise ValueError("ended_at is before started_at")
        return self


class RunQuery(BaseModel):
    """Which runs to return: every given field must match; newest first, at most ``limit``.

    ``since`` is inclusive and ``until`` exclusive, on ``started_at``.
    """

    model_config = ConfigDict(frozen=True)

    session_id: str | None = None
    agent: str | None = None
    outcome: Outcome | Literal["running"] | None = None
    since: AwareDatetime | None = None
    until: AwareDatetime | None = None
    limit: int = Field(50, ge=1, le=10_000)


class RetentionPolicy(BaseModel):
    """Which runs to forget: those started more than ``max_age`` ago, and for each agent all
    but its ``max_runs_per_agent`` newest."""

    model_config = ConfigDict(frozen=True)

    max_age: timedelta | None = None
    max_runs_per_agent: int | None = Field(None, ge=0)


class EpisodicStore(ABC):
    """Keeps run records and finds them again."""

    @abstractmethod
    async def record(self, run: RunRecord) -> None:
        """Store ``run``, replacing an earlier record of the same ``run_id`` (runs are recorded
        as they progress)."""

    @abstractmethod
    async def get(self, run_id: str) -> RunRecord | None:
        """The run with this id, or None."""

    @abstractmethod
    async def query(self, query: RunQuery) -> list[RunRecord]:
        """The runs matching ``query``, newest (by ``started_at``) first."""

    @abstractmethod
    async def apply_retention(self, policy: RetentionPolicy, now: datetime | None = None) -> int:
        """Delete the runs ``policy`` says to forget (age measured from ``now``, default the
        current time); returns how many were deleted."""

    @abstractmethod
    async def close(self) -> None:
        """Release files and connections; safe to call twice."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
