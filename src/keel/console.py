"""What every ``keel`` command shares: the two consoles and clean failure.

Kept apart from ``keel.cli`` so that each layer's own command module (``keel.tools.cli``,
``keel.graph.cli``, ...) can use it without importing the whole command tree.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from keel.errors import KeelError

__all__ = ["ConfigOption", "DataDirOption", "err", "fail_cleanly", "out"]

out = Console()
err = Console(stderr=True)

# Options every command that touches stored state takes.
DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Where Keel keeps its SQLite files and indexes. Default: ~/.local/share/keel "
        "(or KEEL_DATA_DIR).",
        show_default=False,
    ),
]
ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="Path of a keel.toml to read instead of ./keel.toml (or KEEL_CONFIG).",
        show_default=False,
    ),
]

P = ParamSpec("P")
R = TypeVar("R")


def fail_cleanly(command: Callable[P, R]) -> Callable[P, R]:
    """Turn Keel's expected errors into one line on stderr and exit status 1 (130 on Ctrl-C)."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except KeelError as e:
            err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper
