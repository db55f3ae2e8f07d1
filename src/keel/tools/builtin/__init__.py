"""Built-in tools, registered like any other: each factory returns a ``ToolRegistry`` to
``include`` in yours, so built-ins compose (prefix, filter, pin) exactly like your own tools."""

from __future__ import annotations

from keel.tools.builtin.calculator import calculator, evaluate
from keel.tools.builtin.files import Workspace, file_tools
from keel.tools.builtin.http import HostAllowList, http_tools
from keel.tools.builtin.python import python_tools
from keel.tools.builtin.search import search_tools
from keel.tools.registry import ToolRegistry

__all__ = [
    "HostAllowList",
    "Workspace",
    "calculator",
    "calculator_tools",
    "evaluate",
    "file_tools",
    "http_tools",
    "python_tools",
    "search_tools",
]


def calculator_tools() -> ToolRegistry:
    """A registry with ``calculator`` (safe arithmetic, no ``eval``)."""
    registry = ToolRegistry()
    registry.register(calculator, effects="read_only")
    return registry
