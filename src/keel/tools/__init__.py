"""Tools: typed Python functions a model may call, validated before they run."""

from keel.tools.registry import Tool, ToolRegistry, ToolResult

__all__ = ["Tool", "ToolRegistry", "ToolResult"]
