"""The ``Executor`` protocol: run one function over a batch of items, somewhere.

``Executor.map(fn, items, progress)`` returns one ``ItemResult`` per item, in the items' order.
A failing item is reported in its result (``ok`` is false, ``error`` says why) and never fails the
batch, so one corrupt file or one crashing case does not throw away the work of the others.
``LocalExecutor`` runs items in this process (the default); ``RayExecutor`` runs them as Ray tasks.
"""

from __future__ import annotations

import asyncio
import inspect
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic, Self, TypeVar, cast

from keel.errors import TaskFailedError

__all__ = ["Executor", "ItemResult", "MapProgress", "ProgressCallback", "call_item"]

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class ItemResult(Generic[R]):
    """What became of one item: its ``value``, or the ``error`` (type and message) it raised."""

    index: int
    value: R | None = None
    error: str | None = None
    error_type: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def unwrap(self) -> R:
        """The value; ``TaskFailedError`` (naming the item and the cause) if the item failed."""
        if self.error is not None:
            raise TaskFailedError(f"item {self.index} failed: {self.error_type}: {self.error}")
        return self.value  # type: ignore[return-value]


@dataclass(frozen=True)
class MapProgress:
    """Where a ``map`` is: enough to draw a progress bar."""

    done: int
    failed: int
    total: int


ProgressCallback = Callable[[MapProgress], None]


def call_item(fn: Callable[[T], R | Awaitable[R]], item: T) -> R:
    """Call ``fn(item)`` synchronously; a coroutine function is run to completion on a fresh
    event loop (how a worker process runs an async work function)."""
    result = fn(item)
    if inspect.isawaitable(result):
        return cast(R, asyncio.run(_await(result)))
    return result


async def _await(awaitable: Awaitable[R]) -> R:
    return await awaitable


class Executor(ABC):
    """Runs ``fn`` over items, concurrently, keeping their order and reporting each failure."""

    name: str = "executor"

    @abstractmethod
    async def map(
        self,
        fn: Callable[[T], R | Awaitable[R]],
        items: Sequence[T],
        progress: ProgressCallback | None = None,
    ) -> list[ItemResult[R]]:
        """``fn`` applied to every item: one result per item, in order. ``fn`` may be a plain or
        an async function. Remote executors pickle ``fn`` and the items (see docs/scale.md)."""

    async def close(self) -> None:  # noqa: B027 - most executors hold nothing to release
        """Release what the executor holds (threads, a cluster connection)."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class _Tally:
    """Counts finished items and reports progress after each one."""

    def __init__(self, total: int, progress: ProgressCallback | None) -> None:
        self.total = total
        self.done = 0
        self.failed = 0
        self.progress = progress

    def start(self) -> None:
        if self.progress is not None:
            self.progress(MapProgress(done=0, failed=0, total=self.total))

    def finish(self, result: ItemResult[Any]) -> None:
        self.done += 1
        self.failed += 0 if result.ok else 1
        if self.progress is not None:
            self.progress(MapProgress(done=self.done, failed=self.failed, total=self.total))


def failure(index: int, error: BaseException) -> ItemResult[Any]:
    """The result of an item that raised ``error``."""
    return ItemResult(index=index, error=str(error) or repr(error), error_type=type(error).__name__)
