"""Builds the configured executor; Ray is imported only when asked for."""

from __future__ import annotations

from keel.config import DistributedSettings
from keel.distributed.base import Executor
from keel.distributed.local import LocalExecutor

__all__ = ["create_executor"]


def create_executor(settings: DistributedSettings, name: str | None = None) -> Executor:
    """The executor ``name`` (default: ``settings.executor``): ``local`` or ``ray``."""
    chosen = name or settings.executor
    if chosen == "local":
        return LocalExecutor(concurrency=settings.concurrency)
    if chosen == "ray":
        from keel.distributed.ray_executor import RayExecutor

        return RayExecutor(settings.ray_address, max_in_flight=settings.max_in_flight)
    from keel.errors import ConfigError

    raise ConfigError(f"unknown executor {chosen!r}", hint="valid choices: 'local', 'ray'")
