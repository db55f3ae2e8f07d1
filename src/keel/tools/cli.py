"""``keel tools``: list, show and diff the tools of a registry, and check it against a lock file.

Every command works on the registry named by ``--registry module:attribute`` (or the
``KEEL_TOOLS_REGISTRY`` environment variable); the attribute is a ``ToolRegistry`` or a function
returning one, imported with the current directory on the import path.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from keel.console import fail_cleanly
from keel.errors import ToolsLockError
from keel.tools.lockfile import (
    DEFAULT_LOCK_FILE,
    check_lock,
    diff_tools,
    load_registry,
    write_lock,
)

__all__ = ["app"]

app = typer.Typer(
    help="Inspect a tool registry and check it against the committed lock file.",
    no_args_is_help=True,
    add_completion=False,
)

RegistryOption = Annotated[
    str,
    typer.Option(
        "--registry",
        "-r",
        envvar="KEEL_TOOLS_REGISTRY",
        help="The registry as module:attribute (a ToolRegistry, or a function returning one), "
        "e.g. myproject.tools:registry. Default: $KEEL_TOOLS_REGISTRY.",
    ),
]
LockOption = Annotated[
    Path,
    typer.Option("--lock", "-l", help=f"The lock file. Default: ./{DEFAULT_LOCK_FILE}."),
]


@app.command("list")
@fail_cleanly
def list_tools(
    registry: RegistryOption,
    all_versions: Annotated[
        bool, typer.Option("--all", "-a", help="Show every version, not just the latest.")
    ] = False,
) -> None:
    """List the tools: name, version, schema hash, effects and description."""
    reg = load_registry(registry)
    tools = reg.all_versions() if all_versions else reg.tools()
    for tool in tools:
        effects = ",".join(sorted(e.value for e in tool.effects)) or "undeclared"
        flags = " approval" if tool.requires_approval else ""
        typer.echo(
            f"{tool.name:<24} {tool.version:<8} {tool.schema_hash}  {effects}{flags}  "
            f"{tool.description}"
        )


@app.command()
@fail_cleanly
def show(
    name: Annotated[str, typer.Argument(help="The tool, as NAME or NAME@VERSION.")],
    registry: RegistryOption,
) -> None:
    """Show one tool: its schema as the model sees it, and what other layers read."""
    tool = load_registry(registry).get(name)
    body = {
        "name": tool.name,
        "version": tool.version,
        "schema_hash": tool.schema_hash,
        "description": tool.description,
        "parameters": tool.parameters,
        "effects": sorted(e.value for e in tool.effects),
        "secrets": list(tool.secrets),
        "requires_approval": tool.requires_approval,
        "timeout": tool.timeout,
        "examples": list(tool.examples),
    }
    typer.echo(json.dumps(body, indent=2))


@app.command()
@fail_cleanly
def diff(
    name: Annotated[str, typer.Argument(help="The tool's name.")],
    old: Annotated[str, typer.Argument(help="The older version, e.g. 1.0.0.")],
    new: Annotated[str, typer.Argument(help="The newer version, e.g. 2.0.0.")],
    registry: RegistryOption,
) -> None:
    """Show what changed in a tool's contract between two registered versions."""
    reg = load_registry(registry)
    a, b = reg.get(name, old), reg.get(name, new)
    lines = diff_tools(a, b)
    typer.echo(f"{name} {a.version} -> {b.version}")
    for line in lines or ["(no change in the contract)"]:
        typer.echo(f"  {line}")


@app.command()
@fail_cleanly
def check(registry: RegistryOption, lock: LockOption = Path(DEFAULT_LOCK_FILE)) -> None:
    """Fail (exit 1) when a tool's schema changed without a version bump, or is not locked."""
    report = check_lock(load_registry(registry), lock)
    for note in report.notes:
        typer.echo(f"note: {note}")
    if not report.ok:
        for problem in report.problems[1:]:
            typer.echo(f"problem: {problem}", err=True)
        raise ToolsLockError(report.problems[0])
    typer.echo(f"ok: the registry matches {lock}")


@app.command("lock")
@fail_cleanly
def lock_command(
    registry: RegistryOption,
    lock: LockOption = Path(DEFAULT_LOCK_FILE),
    force: Annotated[
        bool,
        typer.Option("--force", help="Re-hash versions whose schema changed (unreleased only)."),
    ] = False,
) -> None:
    """Write the lock file from the registry (commit it; CI runs `keel tools check`)."""
    count = write_lock(load_registry(registry), lock, force=force)
    typer.echo(f"locked {count} tool version(s) in {lock}")
