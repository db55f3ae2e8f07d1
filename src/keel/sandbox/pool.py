"""A warm pool: sandboxes started ahead of time, each used for exactly one run.

A started sandbox has its namespaces, mounts and interpreter ready and waits on a pipe for its
job, so a run from the pool pays only for handing the job over and running it. A used sandbox
is destroyed, never returned; the pool starts a replacement in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from types import TracebackType

from keel.errors import SandboxInputError
from keel.sandbox.base import Limits, Result, Runtime, check_files
from keel.sandbox.bwrap import BubblewrapSandbox, SandboxInstance

__all__ = ["WarmPool"]


class WarmPool:
    """Keeps ``size`` started sandboxes of ``backend`` ready; follows the ``Sandbox`` protocol.

    Runs that need something fixed at start time (network access, a workspace size other than
    the backend's default ``disk_mb``) start a cold sandbox instead. Use ``async with`` or call
    ``close()``: idle sandboxes are processes.
    """

    def __init__(self, backend: BubblewrapSandbox | None = None, *, size: int = 2) -> None:
        if size < 1:
            raise SandboxInputError(f"pool size must be at least 1, not {size}")
        self.backend = backend or BubblewrapSandbox()
        self.size = size
        self._ready: list[SandboxInstance] = []
        self._filling: asyncio.Task[None] | None = None
        self._fill_lock = asyncio.Lock()
        self._closed = False
        self._running = 0  # runs in flight
        self._idle = asyncio.Event()  # set while no run is in flight
        self._idle.set()

    async def __aenter__(self) -> WarmPool:
        await self.fill()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def ready(self) -> int:
        """How many started sandboxes are waiting now."""
        return sum(1 for i in self._ready if i.alive)

    async def fill(self) -> None:
        """Start sandboxes until ``size`` are ready (returns when they are)."""
        async with self._fill_lock:
            while not self._closed and len(self._ready) < self.size:
                await self._start_one()

    async def _start_one(self) -> None:
        instance = await self.backend.start(disk_mb=self.backend.limits.disk_mb)
        if self._closed:
            await instance.destroy()
            return
        self._ready.append(instance)

    async def _top_up(self) -> None:
        """Refill in the background, one sandbox at a time, between runs.

        Starting a sandbox holds the event loop while bubblewrap is forked and exec'd, and takes
        CPU the run needs: while a run is in flight and a started sandbox is still waiting for
        the next one, the start waits until no run is in flight. An empty pool is refilled at
        once, since the next run would otherwise start a sandbox itself.
        """
        while not self._closed and len(self._ready) < self.size:
            if self._running and self._ready:
                await self._idle.wait()
                continue
            async with self._fill_lock:
                # Checked again: a run may have started while this waited for the lock.
                if self._closed or (self._running and self._ready):
                    continue
                if len(self._ready) < self.size:
                    await self._start_one()

    def _refill(self) -> None:
        if self._closed or (self._filling is not None and not self._filling.done()):
            return
        self._filling = asyncio.create_task(self._top_up())

    async def run(
        self,
        code: str,
        *,
        runtime: Runtime = "python",
        files: Mapping[str, bytes] | None = None,
        limits: Limits | None = None,
        allow_net: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> Result:
        """Run in a ready sandbox when there is one, else in a fresh one (see ``Sandbox.run``)."""
        limits = limits or self.backend.limits
        checked = check_files(files or {})
        self._running += 1
        self._idle.clear()
        try:
            return await self._run(code, runtime, checked, limits, allow_net, env)
        finally:
            self._running -= 1
            if not self._running:
                self._idle.set()
            # Refilled after the run, so that starting the next sandbox does not compete with
            # this run for the CPU.
            self._refill()

    async def _run(
        self,
        code: str,
        runtime: Runtime,
        files: Mapping[str, bytes],
        limits: Limits,
        allow_net: Sequence[str],
        env: Mapping[str, str] | None,
    ) -> Result:
        instance = None
        if not allow_net and limits.disk_mb == self.backend.limits.disk_mb:
            while self._ready and instance is None:
                candidate = self._ready.pop(0)
                if candidate.alive:
                    instance = candidate
                else:
                    await candidate.destroy()
        if instance is None:
            instance = await self.backend.start(disk_mb=limits.disk_mb, allow_net=allow_net)
        try:
            return await instance.execute(
                code, runtime=runtime, files=files, limits=limits, env=env
            )
        finally:
            await instance.destroy()

    async def close(self) -> None:
        """Stop refilling and destroy every idle sandbox."""
        self._closed = True
        self._idle.set()  # a background refill waiting for the runs to end stops now
        if self._filling is not None:
            # Not cancelled: a start cut in half could leave a process behind. fill() stops
            # after the start in flight and destroys what it started.
            with contextlib.suppress(Exception):
                await self._filling
        ready, self._ready = self._ready, []
        for instance in ready:
            await instance.destroy()
