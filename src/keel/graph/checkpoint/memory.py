"""A ``Checkpointer`` in a dict: for tests and for runs that need interrupts but not a file."""

from __future__ import annotations

import time

from keel.graph.checkpoint.base import Checkpoint, Checkpointer

__all__ = ["MemoryCheckpointer"]


class MemoryCheckpointer(Checkpointer):
    """Keeps everything in process memory; lost when the process ends."""

    def __init__(self, *, keep_last: int | None = None) -> None:
        if keep_last is not None and keep_last < 1:
            raise ValueError("keep_last must be at least 1 (the latest checkpoint is needed)")
        self.keep_last = keep_last
        self._runs: dict[str, dict[int, Checkpoint]] = {}
        self._effects: dict[str, dict[str, tuple[str, float]]] = {}

    async def put(self, checkpoint: Checkpoint) -> None:
        if not checkpoint.created_at:
            checkpoint = Checkpoint(
                checkpoint.run_id,
                checkpoint.step,
                checkpoint.state,
                checkpoint.tasks,
                checkpoint.status,
                checkpoint.extra,
                time.time(),
            )
        steps = self._runs.setdefault(checkpoint.run_id, {})
        steps[checkpoint.step] = checkpoint
        if self.keep_last is not None:
            for step in [s for s in steps if s <= checkpoint.step - self.keep_last]:
                del steps[step]

    async def latest(self, run_id: str) -> Checkpoint | None:
        steps = self._runs.get(run_id)
        return steps[max(steps)] if steps else None

    async def history(self, run_id: str, *, limit: int | None = None) -> list[Checkpoint]:
        steps = self._runs.get(run_id, {})
        ordered = [steps[s] for s in sorted(steps, reverse=True)]
        return ordered if limit is None else ordered[:limit]

    async def get_effect(self, run_id: str, key: str) -> str | None:
        entry = self._effects.get(run_id, {}).get(key)
        return None if entry is None else entry[0]

    async def put_effect(self, run_id: str, key: str, result: str) -> None:
        self._effects.setdefault(run_id, {}).setdefault(key, (result, time.time()))

    async def prune(self, *, keep_last: int | None = None, older_than: float | None = None) -> int:
        if keep_last is not None and keep_last < 1:
            raise ValueError("keep_last must be at least 1")
        removed = 0
        cutoff = None if older_than is None else time.time() - older_than
        for steps in self._runs.values():
            doomed = set()
            if cutoff is not None:
                doomed |= {s for s, c in steps.items() if c.created_at < cutoff}
            if keep_last is not None:
                doomed |= set(sorted(steps, reverse=True)[keep_last:])
            for s in doomed:
                del steps[s]
            removed += len(doomed)
        if cutoff is not None:
            for journal in self._effects.values():
                old = [k for k, (_, t) in journal.items() if t < cutoff]
                for k in old:
                    del journal[k]
                removed += len(old)
        return removed

    async def delete_run(self, run_id: str) -> None:
        self._runs.pop(run_id, None)
        self._effects.pop(run_id, None)
