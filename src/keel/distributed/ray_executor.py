"""``RayExecutor``: every item runs as a Ray task on a Ray cluster.

The work function is put in the object store once and each item is one task; at most
``max_in_flight`` tasks are outstanding, so a large batch does not flood the cluster. A task
catches its item's exception and returns it as data (an exception class from the worker may not
unpickle on the driver); a task lost with its worker is reported as that item's failure too.

The function and the items are pickled (Ray uses cloudpickle): module-level functions of installed
packages travel by reference and need the same package on every worker; closures travel by value.
Connect with ``address``: ``ray://HOST:10001`` (Ray Client), ``HOST:6379`` (the GCS address of a
cluster this machine is part of), ``"auto"``, or ``None`` to start a private local cluster.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from keel.distributed.base import (
    Executor,
    ItemResult,
    ProgressCallback,
    _Tally,
    call_item,
    failure,
)
from keel.errors import ExecutorError, MissingDependencyError

try:
    import ray
except ImportError as e:  # pragma: no cover - depends on the installed extras
    raise MissingDependencyError("ray", "ray", feature="the Ray executor") from e

__all__ = ["RayExecutor"]

T = TypeVar("T")
R = TypeVar("R")


def _run(fn: Callable[[Any], Any], item: Any) -> tuple[bool, Any, str]:
    """The task body: (True, value, "") or (False, message, exception type name)."""
    try:
        return True, call_item(fn, item), ""
    except Exception as e:
        return False, str(e) or repr(e), type(e).__name__


class RayExecutor(Executor):
    """Runs items as Ray tasks on the cluster at ``address`` (connected on first use)."""

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        *,
        max_in_flight: int = 64,
        num_cpus: float = 1,
        namespace: str = "keel",
        init_options: dict[str, Any] | None = None,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self.address = address
        self.max_in_flight = max_in_flight
        self.num_cpus = num_cpus
        self.namespace = namespace
        self.init_options = dict(init_options or {})
        self._connected_here = False
        self._task: Any = None

    def _reachable(self) -> None:
        """Fail fast on an address nothing listens on: ``ray.init`` would retry for minutes."""
        if self.address is None or self.address == "auto":
            return
        hostport = self.address.removeprefix("ray://")
        host, _, port = hostport.rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=5).close()
        except (OSError, ValueError) as e:
            raise ExecutorError(
                f"cannot reach the Ray cluster at {self.address}: {e}",
                hint="check distributed.ray_address (ray://HOST:10001 or HOST:6379) and that "
                "the cluster is up",
            ) from e

    def _connect(self) -> None:
        self._reachable()
        if ray.is_initialized():
            return
        options: dict[str, Any] = {"namespace": self.namespace, "log_to_driver": False}
        if self.address is not None and not self.address.startswith("ray://"):
            # Keep the driver on the address family of a loopback cluster (see docs/scale.md).
            host = self.address.rsplit(":", 1)[0]
            if host in {"127.0.0.1", "localhost"}:
                options["_node_ip_address"] = "127.0.0.1"
        options.update(self.init_options)
        try:
            ray.init(address=self.address, **options)
        except Exception as e:
            raise ExecutorError(
                f"cannot connect to the Ray cluster at {self.address or 'a new local cluster'}: "
                f"{type(e).__name__}: {e}",
                hint="check distributed.ray_address and that the cluster is up (`ray status`)",
            ) from e
        self._connected_here = True

    async def map(
        self,
        fn: Callable[[T], R | Awaitable[R]],
        items: Sequence[T],
        progress: ProgressCallback | None = None,
    ) -> list[ItemResult[R]]:
        tally = _Tally(len(items), progress)
        tally.start()
        if not items:
            return []
        await asyncio.to_thread(self._connect)
        if self._task is None:
            self._task = ray.remote(num_cpus=self.num_cpus, max_retries=0)(_run)
        fn_ref = ray.put(fn)
        gate = asyncio.Semaphore(self.max_in_flight)

        async def one(index: int, item: T) -> ItemResult[R]:
            async with gate:
                try:
                    ref = self._task.remote(fn_ref, item)
                    ok, value, kind = await asyncio.wrap_future(ref.future())
                    result: ItemResult[R] = (
                        ItemResult(index=index, value=value)
                        if ok
                        else ItemResult(index=index, error=value, error_type=kind)
                    )
                except Exception as e:  # the task or its worker was lost, or pickling failed
                    result = failure(index, e)
            tally.finish(result)
            return result

        return list(await asyncio.gather(*(one(i, item) for i, item in enumerate(items))))

    async def close(self) -> None:
        """Disconnect from the cluster if this executor connected (the cluster keeps running)."""
        if self._connected_here:
            await asyncio.to_thread(ray.shutdown)
            self._connected_here = False
            self._task = None
