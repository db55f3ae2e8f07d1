"""Durable checkpoints and the effect journal: the protocol and its backends."""

from keel.graph.checkpoint.base import Checkpoint, Checkpointer, RunStatus
from keel.graph.checkpoint.memory import MemoryCheckpointer
from keel.graph.checkpoint.sqlite import SqliteCheckpointer

__all__ = ["Checkpoint", "Checkpointer", "MemoryCheckpointer", "RunStatus", "SqliteCheckpointer"]
