"""``python``: run Python code in a sandbox (``keel.sandbox``) and see its output.

The sandbox starts empty (plus the files given), has no network and is destroyed after the run,
so a call changes nothing outside it: the tool is declared read-only. A non-zero exit or a limit
hit is information for the model, not a tool failure: it comes back in the result.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from keel.tools.registry import ToolRegistry

if TYPE_CHECKING:
    from keel.sandbox.base import Limits, Sandbox

__all__ = ["python_tools"]


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}\n[cut: {len(text) - limit:,} more characters]"


def python_tools(
    sandbox: Sandbox, *, limits: Limits | None = None, max_output_chars: int = 10_000
) -> ToolRegistry:
    """A registry with ``python``, which runs code in ``sandbox`` under ``limits``."""
    registry = ToolRegistry()
    wall = limits.wall_time_s if limits is not None else 30.0

    @registry.tool(effects="read_only", timeout=wall + 15.0)
    async def python(code: str, files: dict[str, str] | None = None) -> dict[str, Any]:
        """Run a Python 3 program in an isolated sandbox (no network) and return its output.

        Args:
            code: The program. Print what you want to see.
            files: Text files to put in the working directory first, by relative path.
        """
        given = {name: text.encode() for name, text in (files or {}).items()}
        result = await sandbox.run(code, runtime="python", files=given, limits=limits)
        out: dict[str, Any] = {
            "exit_code": result.exit_code,
            "stdout": _cut(result.stdout_text, max_output_chars),
            "stderr": _cut(result.stderr_text, max_output_chars),
        }
        if result.files_out:
            out["files_out"] = {
                name: _cut(data.decode("utf-8", "replace"), max_output_chars)
                for name, data in sorted(result.files_out.items())
            }
        message = result.limit_message()
        if message is not None:
            out["limit"] = message
        return out

    return registry
