"""``LocalExecutor``: the default executor, in this process.

Async work functions run as tasks on the running event loop; plain functions run in worker
threads (``asyncio.to_thread``), so a blocking loader or embedder does not stall the loop. At most
``concurrency`` items are in flight at once.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from keel.distributed.base import (
    Executor,
    ItemResult,
    ProgressCallback,
    _Tally,
    failure,
)

__all__ = ["LocalExecutor"]

T = TypeVar("T")
R = TypeVar("R")


class LocalExecutor(Executor):
    """Runs items concurrently in this process, at most ``concurrency`` at a time."""

    name = "local"

    def __init__(self, concurrency: int = 4) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.concurrency = concurrency

    async def map(
        self,
        fn: Callable[[T], R | Awaitable[R]],
        items: Sequence[T],
        progress: ProgressCallback | None = None,
    ) -> list[ItemResult[R]]:
        tally = _Tally(len(items), progress)
        tally.start()
        gate = asyncio.Semaphore(self.concurrency)

        async def one(index: int, item: T) -> ItemResult[R]:
            async with gate:
                try:
                    if inspect.iscoroutinefunction(fn):
                        value: Any = await fn(item)
                    else:
                        value = await asyncio.to_thread(fn, item)
                        if inspect.isawaitable(value):
                            value = await value
                    result: ItemResult[R] = ItemResult(index=index, value=value)
                except Exception as e:
                    result = failure(index, e)
            tally.finish(result)
            return result

        return list(await asyncio.gather(*(one(i, item) for i, item in enumerate(items))))
