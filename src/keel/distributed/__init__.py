"""Batch work on one machine or a Ray cluster, behind one small ``Executor`` protocol.

``LocalExecutor`` (the default) runs items in this process; ``RayExecutor`` (``pip install
'keel[ray]'``) runs them as Ray tasks. Orchestrator-workers fan-out, ``keel ingest`` and batch
evaluation take an executor; see docs/scale.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from keel._lazy import lazy_exports

if TYPE_CHECKING:
    from keel.distributed.base import Executor, ItemResult, MapProgress
    from keel.distributed.factory import create_executor
    from keel.distributed.local import LocalExecutor
    from keel.distributed.ray_executor import RayExecutor

__all__ = [
    "Executor",
    "ItemResult",
    "LocalExecutor",
    "MapProgress",
    "RayExecutor",
    "create_executor",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "Executor": "keel.distributed.base",
        "ItemResult": "keel.distributed.base",
        "MapProgress": "keel.distributed.base",
        "LocalExecutor": "keel.distributed.local",
        "RayExecutor": "keel.distributed.ray_executor",
        "create_executor": "keel.distributed.factory",
    },
)
