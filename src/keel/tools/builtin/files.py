"""``read_file`` and ``write_file`` confined to one workspace directory.

A path from the model is relative to the workspace. Absolute paths, ``..`` and symbolic links that
lead outside are refused: the path is resolved (following every link) and must stay under the
resolved workspace, and the final open uses ``O_NOFOLLOW`` so a link swapped in after the check is
not followed either.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from keel.errors import ToolExecutionError
from keel.tools.registry import ToolRegistry

__all__ = ["Workspace", "file_tools"]


class Workspace:
    """A directory a model may read and write in, and nothing outside it."""

    def __init__(self, root: str | Path, *, max_bytes: int = 1_000_000) -> None:
        self.root = Path(root).resolve(strict=True)
        if not self.root.is_dir():
            raise NotADirectoryError(f"workspace {self.root} is not a directory")
        self.max_bytes = max_bytes

    def resolve(self, path: str) -> Path:
        """The real path of ``path`` inside the workspace, or a refusal the model can read."""
        pure = PurePosixPath(path)
        if not path.strip() or "\x00" in path:
            raise ToolExecutionError("the path is empty or invalid")
        if pure.is_absolute() or Path(path).is_absolute():
            raise ToolExecutionError(
                f"absolute paths are not allowed: {path}",
                hint="use a path relative to the workspace, e.g. notes/todo.md",
            )
        if ".." in pure.parts:
            raise ToolExecutionError(
                f"'..' is not allowed in a path: {path}", hint="stay inside the workspace"
            )
        candidate = (self.root / pure).resolve()
        if candidate != self.root and not candidate.is_relative_to(self.root):
            raise ToolExecutionError(
                f"{path} leads outside the workspace (through a symbolic link)",
                hint="stay inside the workspace",
            )
        return candidate

    def read(self, path: str) -> str:
        target = self.resolve(path)
        if target.is_dir():
            raise ToolExecutionError(f"{path} is a directory", hint="name a file in it")
        try:
            fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            raise ToolExecutionError(f"no such file: {path}") from None
        except IsADirectoryError:
            raise ToolExecutionError(f"{path} is a directory") from None
        except OSError as e:
            raise ToolExecutionError(f"cannot read {path}: {e.strerror}") from None
        with os.fdopen(fd, "rb") as f:
            data = f.read(self.max_bytes + 1)
        if len(data) > self.max_bytes:
            raise ToolExecutionError(
                f"{path} is larger than {self.max_bytes:,} bytes",
                hint="read a smaller file",
            )
        return data.decode("utf-8", errors="replace")

    def write(self, path: str, content: str) -> int:
        data = content.encode()
        if len(data) > self.max_bytes:
            raise ToolExecutionError(f"the content is larger than {self.max_bytes:,} bytes")
        target = self.resolve(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        # Re-check after mkdir: a parent could have been swapped for a link meanwhile.
        self.resolve(path)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
        try:
            fd = os.open(target, flags, 0o644)
        except IsADirectoryError:
            raise ToolExecutionError(f"{path} is a directory") from None
        except OSError as e:
            raise ToolExecutionError(f"cannot write {path}: {e.strerror}") from None
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return len(data)


def file_tools(root: str | Path, *, max_bytes: int = 1_000_000) -> ToolRegistry:
    """A registry with ``read_file`` and ``write_file`` confined to ``root``."""
    workspace = Workspace(root, max_bytes=max_bytes)
    registry = ToolRegistry()

    @registry.tool(effects="read_only")
    def read_file(path: str) -> str:
        """Read a UTF-8 text file from the workspace.

        Args:
            path: Path relative to the workspace, e.g. "notes/todo.md".
        """
        return workspace.read(path)

    @registry.tool(effects="writes")
    def write_file(path: str, content: str) -> str:
        """Write a UTF-8 text file in the workspace, replacing it if it exists.

        Args:
            path: Path relative to the workspace, e.g. "notes/todo.md".
            content: The full text of the file.
        """
        size = workspace.write(path, content)
        return f"wrote {size} bytes to {path}"

    return registry
