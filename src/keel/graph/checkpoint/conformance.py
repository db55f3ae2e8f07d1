"""The conformance suite every ``Checkpointer`` backend must pass.

Subclass ``CheckpointerConformance`` in a pytest module and provide a ``checkpointer`` fixture
that yields a fresh, empty backend (``make_checkpointer(keep_last=...)`` too for retention);
pytest then runs every ``test_*`` method below against it. pytest-asyncio must be in auto mode.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from keel.graph.checkpoint.base import Checkpoint, Checkpointer

__all__ = ["CheckpointerConformance"]


def _cp(run: str, step: int, *, created_at: float = 0.0, status: str = "running") -> Checkpoint:
    return Checkpoint(
        run,
        step,
        f'{{"n": {step}}}',
        f'[["node{step}"]]',
        status,  # type: ignore[arg-type]
        '{"barriers": {}}',
        created_at or time.time(),
    )


class CheckpointerConformance:
    """Behaviour shared by all backends; see the module docstring for how to use it."""

    async def test_unknown_run_has_no_checkpoint(self, checkpointer: Checkpointer) -> None:
        assert await checkpointer.latest("nope") is None
        assert await checkpointer.history("nope") == []

    async def test_latest_is_the_highest_step_and_round_trips(
        self, checkpointer: Checkpointer
    ) -> None:
        for step in (0, 2, 1):
            await checkpointer.put(_cp("r1", step))
        await checkpointer.put(_cp("r2", 7))
        latest = await checkpointer.latest("r1")
        assert latest is not None
        assert (latest.run_id, latest.step, latest.state) == ("r1", 2, '{"n": 2}')
        assert (latest.tasks, latest.status, latest.extra) == (
            '[["node2"]]',
            "running",
            '{"barriers": {}}',
        )
        assert [c.step for c in await checkpointer.history("r1")] == [2, 1, 0]
        assert [c.step for c in await checkpointer.history("r1", limit=2)] == [2, 1]

    async def test_put_replaces_the_same_step(self, checkpointer: Checkpointer) -> None:
        await checkpointer.put(_cp("r", 1))
        await checkpointer.put(_cp("r", 1, status="done"))
        history = await checkpointer.history("r")
        assert [(c.step, c.status) for c in history] == [(1, "done")]

    async def test_effects_are_written_once(self, checkpointer: Checkpointer) -> None:
        assert await checkpointer.get_effect("r", "1/a#0/effect0") is None
        await checkpointer.put_effect("r", "1/a#0/effect0", '"first"')
        await checkpointer.put_effect("r", "1/a#0/effect0", '"second"')
        assert await checkpointer.get_effect("r", "1/a#0/effect0") == '"first"'
        assert await checkpointer.get_effect("other", "1/a#0/effect0") is None

    async def test_prune_keeps_the_last_n_per_run(self, checkpointer: Checkpointer) -> None:
        for step in range(5):
            await checkpointer.put(_cp("a", step))
        for step in range(2):
            await checkpointer.put(_cp("b", step))
        removed = await checkpointer.prune(keep_last=2)
        assert removed == 3
        assert [c.step for c in await checkpointer.history("a")] == [4, 3]
        assert [c.step for c in await checkpointer.history("b")] == [1, 0]

    async def test_prune_by_age(self, checkpointer: Checkpointer) -> None:
        old = time.time() - 3600
        await checkpointer.put(_cp("a", 0, created_at=old))
        await checkpointer.put(_cp("a", 1))
        await checkpointer.put_effect("a", "k", "1")
        removed = await checkpointer.prune(older_than=60)
        assert removed == 1
        assert [c.step for c in await checkpointer.history("a")] == [1]
        assert await checkpointer.get_effect("a", "k") == "1"

    async def test_delete_run_forgets_checkpoints_and_effects(
        self, checkpointer: Checkpointer
    ) -> None:
        await checkpointer.put(_cp("a", 0))
        await checkpointer.put_effect("a", "k", "1")
        await checkpointer.put(_cp("b", 0))
        await checkpointer.delete_run("a")
        assert await checkpointer.latest("a") is None
        assert await checkpointer.get_effect("a", "k") is None
        assert await checkpointer.latest("b") is not None

    async def test_keep_last_prunes_on_every_put(
        self, make_checkpointer: Callable[..., Checkpointer]
    ) -> None:
        checkpointer = make_checkpointer(keep_last=3)
        for step in range(10):
            await checkpointer.put(_cp("r", step))
        assert [c.step for c in await checkpointer.history("r")] == [9, 8, 7]
        await checkpointer.aclose()
