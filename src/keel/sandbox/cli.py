"""``keel sandbox run``: run code in a fresh sandbox and exit the way the program did.

The program's stdout and stderr are printed byte for byte. The exit status is the program's own;
when a limit ended the run, one ``error: ...`` line says which, and the status is that limit's
code (124 time, 137 memory, 141 output, 153 file size: see ``keel.sandbox.EXIT_CODES``).
"""

from __future__ import annotations

import asyncio
import math
import sys
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from keel.console import fail_cleanly
from keel.errors import SandboxInputError
from keel.sandbox.base import Limits, Result, check_files

__all__ = ["app"]

app = typer.Typer(
    help="Run untrusted code in an isolated, throwaway sandbox (bubblewrap).",
    no_args_is_help=True,
    add_completion=False,
)


def _read_inputs(paths: list[Path]) -> dict[str, bytes]:
    """Files and directories for the workspace, each under its own name."""
    files: dict[str, bytes] = {}
    for path in paths:
        if path.is_file():
            files[path.name] = path.read_bytes()
        elif path.is_dir():
            for item in sorted(path.rglob("*")):
                if item.is_file() and not item.is_symlink():
                    files[str(Path(path.name) / item.relative_to(path))] = item.read_bytes()
        else:
            raise SandboxInputError(f"--in {path}: no such file or directory")
    return check_files(files)


def _write_outputs(result: Result, out: Path) -> None:
    for name, data in check_files(result.files_out).items():
        target = out / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


@app.command()
@fail_cleanly
def run(
    code: Annotated[
        str | None,
        typer.Argument(help="The code to run (Python, or shell with --shell).", show_default=False),
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option("--file", "-f", help="Run the code in this file instead.", show_default=False),
    ] = None,
    shell: Annotated[
        bool, typer.Option("--shell", help="Run the code with /bin/sh instead of Python.")
    ] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Wall-clock limit in seconds (exit 124).")
    ] = 30.0,
    cpu: Annotated[
        int | None,
        typer.Option("--cpu", help="CPU-time limit in seconds (exit 124). Default: --timeout."),
    ] = None,
    memory: Annotated[int, typer.Option("--memory", help="Memory limit in MB (exit 137).")] = 512,
    processes: Annotated[
        int, typer.Option("--processes", help="Most processes and threads at once.")
    ] = 64,
    allow_net: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-net",
            help="Let the program reach HOST or HOST:PORT through the sandbox's proxy "
            "(repeatable). Without it there is no network at all.",
            show_default=False,
        ),
    ] = None,
    inputs: Annotated[
        list[Path] | None,
        typer.Option(
            "--in",
            help="Copy this file or directory into the workspace (repeatable).",
            show_default=False,
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Write the files the program created or changed into this directory.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run CODE (or --file) in a fresh sandbox; print its output and exit with its status."""
    from keel.sandbox.bwrap import BubblewrapSandbox

    if (code is None) == (file is None):
        raise SandboxInputError("give the code to run, or --file, but not both")
    if file is not None:
        try:
            code = file.read_text(encoding="utf-8")
        except OSError as e:
            raise SandboxInputError(f"cannot read --file {file}: {e.strerror}") from None
    assert code is not None
    try:
        limits = Limits(
            wall_time_s=timeout,
            cpu_time_s=cpu if cpu is not None else max(1, math.ceil(timeout)),
            memory_mb=memory,
            processes=processes,
        )
    except ValidationError as e:
        problems = "; ".join(f"{err['loc'][0]}: {err['msg']}" for err in e.errors())
        raise SandboxInputError(f"invalid limits: {problems}") from None
    files = _read_inputs(inputs or [])
    sandbox = BubblewrapSandbox(limits=limits)
    result = asyncio.run(
        sandbox.run(
            code,
            runtime="shell" if shell else "python",
            files=files,
            allow_net=allow_net or (),
        )
    )
    sys.stdout.buffer.write(result.stdout)
    sys.stdout.flush()
    sys.stderr.buffer.write(result.stderr)
    sys.stderr.flush()
    if out is not None:
        _write_outputs(result, out)
    message = result.limit_message()
    if message is not None:
        typer.echo(f"error: {message}", err=True)
    raise typer.Exit(result.exit_code)
