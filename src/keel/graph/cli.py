"""``keel graph``: inspect graphs from the command line.

``keel graph show MODULE:ATTRIBUTE`` prints a graph as Mermaid text; the attribute is a ``Graph``,
a compiled graph, or a function of no arguments returning one, imported with the current
directory on the import path.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from keel.console import fail_cleanly
from keel.errors import GraphError
from keel.graph.builder import Graph
from keel.graph.engine import CompiledGraph

__all__ = ["app", "load_graph"]

app = typer.Typer(
    help="Inspect graphs: draw them as Mermaid text.", no_args_is_help=True, add_completion=False
)


@app.callback()
def _group() -> None:
    """Inspect graphs: draw them as Mermaid text."""


def load_graph(target: str) -> Graph[Any]:
    """Import ``module:attribute`` and return the graph it names."""
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise GraphError(f"{target!r} is not MODULE:ATTRIBUTE, e.g. myapp.flows:graph")
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise GraphError(f"cannot import {module_name!r}: {e}") from None
    value = getattr(module, attribute, None)
    if value is None:
        raise GraphError(f"module {module_name!r} has no attribute {attribute!r}")
    if callable(value) and not isinstance(value, Graph | CompiledGraph):
        value = value()
    if isinstance(value, CompiledGraph):
        return value.graph
    if isinstance(value, Graph):
        return value
    raise GraphError(f"{target} is a {type(value).__name__}, not a Graph or a compiled graph")


@app.command("show")
@fail_cleanly
def show(
    target: Annotated[
        str,
        typer.Argument(
            help="The graph as MODULE:ATTRIBUTE (a Graph, a compiled graph, or a function "
            "returning one), e.g. examples.routing:graph."
        ),
    ],
) -> None:
    """Print the graph as Mermaid flowchart text (paste it into any Mermaid renderer)."""
    typer.echo(load_graph(target).mermaid(), nl=False)
