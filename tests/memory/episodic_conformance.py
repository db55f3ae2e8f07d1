"""The behaviour every ``EpisodicStore`` backend must have, as a reusable test class.

A backend's test module subclasses ``EpisodicStoreConformance`` and provides an ``open_store``
fixture: a callable that opens the backend over the same storage each time it is called.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from keel.memory.episodic import (
    EpisodicStore,
    RetentionPolicy,
    RunQuery,
    RunRecord,
    RunUsage,
    StepRecord,
    ToolCallRecord,
)

OpenEpisodicStore = Callable[[], EpisodicStore]
T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def run(
    run_id: str,
    minutes: int,
    *,
    agent: str = "researcher",
    session: str = "s1",
    outcome: str | None = "success",
    reason: str = "",
) -> RunRecord:
    """A run started ``minutes`` after T0, with one model step and one tool step."""
    started = T0 + timedelta(minutes=minutes)
    return RunRecord(
        run_id=run_id,
        session_id=session,
        agent=agent,
        task=f"task of {run_id}",
        steps=[
            StepRecord(kind="model", content="call search", started_at=started),
            StepRecord(
                kind="tool",
                tool_calls=[
                    ToolCallRecord(name="search", arguments={"q": "venus"}, result="hot"),
                    ToolCallRecord(name="fetch", arguments={"url": "x"}, error="timeout"),
                ],
                started_at=started + timedelta(seconds=1),
                ended_at=started + timedelta(seconds=2),
            ),
        ],
        outcome=outcome,  # type: ignore[arg-type]
        reason=reason or ("timed out" if outcome == "failure" else ""),
        started_at=started,
        ended_at=None if outcome is None else started + timedelta(seconds=3),
        usage=RunUsage(input_tokens=100, output_tokens=20, model_calls=1, tool_calls=2),
        metadata={"model": "smollm2"},
    )


class EpisodicStoreConformance:
    """Subclass me and define the ``open_store`` fixture."""

    async def test_a_recorded_run_comes_back_whole(self, open_store: OpenEpisodicStore) -> None:
        store = open_store()
        original = run("r1", 0, outcome="failure", reason="the tool timed out")
        await store.record(original)
        assert await store.get("r1") == original
        assert await store.get("missing") is None
        await store.close()

    async def test_recording_again_replaces_the_run(self, open_store: OpenEpisodicStore) -> None:
        store = open_store()
        await store.record(run("r1", 0, outcome=None))
        assert [r.run_id for r in await store.query(RunQuery(outcome="running"))] == ["r1"]
        await store.record(run("r1", 0, outcome="success"))
        assert await store.query(RunQuery(outcome="running")) == []
        assert [r.outcome for r in await store.query(RunQuery())] == ["success"]
        await store.close()

    async def test_queries_filter_and_order_newest_first(
        self, open_store: OpenEpisodicStore
    ) -> None:
        store = open_store()
        for record in [
            run("a", 0),
            run("b", 10, outcome="failure"),
            run("c", 20, agent="writer"),
            run("d", 30, session="s2", outcome="failure"),
            run("e", 40, agent="writer", session="s2"),
        ]:
            await store.record(record)

        async def ids(**fields: object) -> list[str]:
            return [r.run_id for r in await store.query(RunQuery(**fields))]  # type: ignore[arg-type]

        assert await ids() == ["e", "d", "c", "b", "a"]
        assert await ids(session_id="s2") == ["e", "d"]
        assert await ids(agent="researcher") == ["d", "b", "a"]
        assert await ids(agent="researcher", outcome="failure") == ["d", "b"]
        assert await ids(since=T0 + timedelta(minutes=10), until=T0 + timedelta(minutes=30)) == [
            "c",
            "b",
        ]
        assert await ids(limit=2) == ["e", "d"]
        await store.close()

    async def test_time_ranges_compare_instants_across_time_zones(
        self, open_store: OpenEpisodicStore
    ) -> None:
        store = open_store()
        await store.record(run("a", 0))
        # 14:00 at UTC+2 is 12:00 UTC, the instant run "a" started.
        plus_two = datetime(2026, 11, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
        found = await store.query(RunQuery(since=plus_two))
        assert [r.run_id for r in found] == ["a"]
        assert await store.query(RunQuery(since=plus_two + timedelta(seconds=1))) == []
        await store.close()

    async def test_retention_by_age_and_by_count_per_agent(
        self, open_store: OpenEpisodicStore
    ) -> None:
        store = open_store()
        for i in range(5):
            await store.record(run(f"r{i}", i * 60))
            await store.record(run(f"w{i}", i * 60, agent="writer"))
        now = T0 + timedelta(hours=4, minutes=30)

        deleted = await store.apply_retention(RetentionPolicy(max_age=timedelta(hours=3)), now)
        assert deleted == 4  # r0, r1, w0, w1 started more than three hours before now
        deleted = await store.apply_retention(RetentionPolicy(max_runs_per_agent=2), now)
        assert deleted == 2
        left = sorted(r.run_id for r in await store.query(RunQuery()))
        assert left == ["r3", "r4", "w3", "w4"]
        assert await store.apply_retention(RetentionPolicy(), now) == 0
        await store.close()

    async def test_runs_survive_reopening(self, open_store: OpenEpisodicStore) -> None:
        store = open_store()
        await store.record(run("r1", 0))
        await store.close()
        await store.close()  # twice is fine
        reopened = open_store()
        assert (await reopened.get("r1")) == run("r1", 0)
        await reopened.close()


def test_a_failure_needs_a_reason_and_times_need_a_zone() -> None:
    with pytest.raises(ValidationError, match="needs a reason"):
        RunRecord(run_id="x", session_id="s", agent="a", outcome="failure", started_at=T0)
    with pytest.raises(ValidationError):
        RunRecord(run_id="x", session_id="s", agent="a", started_at=datetime(2026, 1, 1))
    with pytest.raises(ValidationError, match="before started_at"):
        RunRecord(run_id="x", session_id="s", agent="a", started_at=T0, ended_at=T0 - timedelta(1))
