"""What every ``keel`` command shares: the two consoles and clean failure.

Kept apart from ``keel.cli`` so that each layer's own command module (``keel.tools.cli``,
``keel.graph.cli``, ...) can use it without importing the whole command tree.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from keel.errors import KeelError

__all__ = ["err", "fail_cleanly", "out"]

out = Console()
err = Console(stderr=True)

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
