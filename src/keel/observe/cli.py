"""``keel trace`` (list, show, last, export, stats) and ``keel ui``: the trace store from the
command line and in a browser.

Mounted by ``keel.cli``: ``app`` as ``keel trace``, ``ui`` as the ``keel ui`` command. Expected
failures go through ``keel.console.fail_cleanly``: one ``error: ...`` line, exit status 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from keel.console import ConfigOption, DataDirOption, err, fail_cleanly, out
from keel.errors import StoreError

if TYPE_CHECKING:
    from keel.config import KeelSettings
    from keel.observe.base import TraceStore

__all__ = ["app", "ui"]

app = typer.Typer(
    help="Inspect recorded traces (the trace store: local SQLite, or PostgreSQL).",
    no_args_is_help=True,
)

RunArgument = Annotated[
    str,
    typer.Argument(help="A trace id, or its first 6+ characters, or 'last'.", show_default=False),
]


def _settings(config: Path | None, data_dir: Path | None) -> KeelSettings:
    from keel.config import load_settings

    overrides: dict[str, Any] = {} if data_dir is None else {"data_dir": data_dir}
    return load_settings(overrides, config_file=config)


def _store(config: Path | None, data_dir: Path | None) -> TraceStore:
    """The store ``[trace]`` names: PostgreSQL with ``trace.dsn``, else DATA_DIR/traces.db."""
    from keel.observe.base import open_trace_store

    settings = _settings(config, data_dir)
    return open_trace_store(settings.trace, settings.trace_path)


def _resolve(store: TraceStore, run: str) -> str:
    if run.strip().lower() == "last":
        last = store.last_trace_id()
        if last is None:
            raise StoreError(f"no traces recorded yet in {store.location}")
        return last
    return store.trace(run)[0].trace_id


def _show(store: TraceStore, run: str) -> None:
    from keel.observe.render import render_summary, render_trace

    trace_id = _resolve(store, run)
    spans = store.trace(trace_id)
    out.print(render_trace(spans))
    out.print(render_summary(store.summary(trace_id)))


@app.command("show")
@fail_cleanly
def show(run: RunArgument, data_dir: DataDirOption = None, config: ConfigOption = None) -> None:
    """Print one run as a span tree with timings, tokens, cost, Keel attributes and errors."""
    with _store(config, data_dir) as store:
        _show(store, run)


@app.command("last")
@fail_cleanly
def last(data_dir: DataDirOption = None, config: ConfigOption = None) -> None:
    """Print the most recent run as a tree (same as ``keel trace show last``)."""
    with _store(config, data_dir) as store:
        _show(store, "last")


@app.command("list")
@fail_cleanly
def list_traces(
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="How many traces.")] = 20,
    session: Annotated[
        str | None,
        typer.Option("--session", "-s", help="Only runs of this session (gen_ai.conversation.id)."),
    ] = None,
    agent: Annotated[
        str | None, typer.Option("--agent", "-a", help="Only runs of this agent.")
    ] = None,
    errors: Annotated[
        bool, typer.Option("--errors", "-e", help="Only runs with a failed span.")
    ] = False,
    search: Annotated[
        str | None,
        typer.Option(
            "--search",
            "-q",
            help="Only runs with a span whose name or attributes contain this text.",
        ),
    ] = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """List recent runs, newest first: id, run, agent, time, steps, tokens, cost, status."""
    from keel.observe.render import format_cost

    with _store(config, data_dir) as store:
        summaries = store.traces(limit, session=session, agent=agent, errors=errors, search=search)
        if not summaries:
            filtered = any((session, agent, errors, search))
            what = "no traces match" if filtered else "no traces recorded yet"
            err.print(f"{what} in {store.location}", highlight=False, markup=False)
        for s in summaries:
            cost = format_cost(s.cost_usd) if s.cost_usd else ""
            status = s.status if not s.errors or s.status == "error" else f"ok ({s.errors} failed)"
            out.print(
                f"{s.trace_id[:12]}  {s.root_name:<28} {(s.agent_name or '-'):<16} "
                f"{s.wall_time_s:7.2f} s  {s.steps:3d} steps  "
                f"{s.input_tokens + s.output_tokens:6d} tok  {cost:>9}  {status}",
                highlight=False,
                markup=False,
            )


@app.command("export")
@fail_cleanly
def export(
    run: Annotated[
        str | None,
        typer.Argument(help="A trace id (6+ characters) or 'last'.", show_default=False),
    ] = None,
    all_traces: Annotated[bool, typer.Option("--all", help="Export every stored trace.")] = False,
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            "-f",
            help="json (Keel's records and summaries) or otlp-json (OTLP/JSON, which any "
            "OpenTelemetry collector accepts on /v1/traces).",
        ),
    ] = "json",
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write to this file instead of standard output."),
    ] = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Export one run (RUN) or all (--all) as JSON or OTLP/JSON."""
    from keel.observe.export import dumps, to_json, to_otlp_json

    if fmt not in ("json", "otlp-json"):
        raise typer.BadParameter(f"{fmt!r}: use json or otlp-json", param_hint="--format")
    if (run is None) == (not all_traces):
        raise typer.BadParameter("give a RUN or --all (not both)", param_hint="RUN")
    settings = _settings(config, data_dir)
    with _store(config, data_dir) as store:
        ids = store.trace_ids() if all_traces else [_resolve(store, run or "")]
        traces = [store.trace(i) for i in ids]
    data = (
        to_json(traces)
        if fmt == "json"
        else to_otlp_json(traces, service_name=settings.trace.service_name)
    )
    text = dumps(data)
    if output is None:
        typer.echo(text, nl=False)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as e:
        raise StoreError(f"cannot write {output}: {e.strerror or e}") from None
    err.print(
        f"exported {len(traces)} trace{'s' if len(traces) != 1 else ''} to {output}",
        highlight=False,
        markup=False,
    )


@app.command("stats")
@fail_cleanly
def stats(data_dir: DataDirOption = None, config: ConfigOption = None) -> None:
    """Aggregate every stored run: latency per operation and tool, tokens and cost per model,
    errors and retries (the figures the OpenTelemetry metrics export, read from the store)."""
    from keel.observe.render import format_cost, format_duration
    from keel.observe.stats import compute_stats

    with _store(config, data_dir) as store:
        result = compute_stats(store.spans())
    out.print(
        f"{result.traces} runs ({result.failed_traces} with errors), {result.spans} spans, "
        f"{result.input_tokens} tokens in, {result.output_tokens} out, "
        f"{format_cost(result.cost_usd)}, {result.retries} retries",
        highlight=False,
        markup=False,
    )
    for title, groups in (("operation", result.by_operation), ("tool", result.by_tool)):
        if not groups:
            continue
        table = Table(title=f"by {title}", title_justify="left")
        for column in (title, "calls", "errors", "p50", "p95", "max"):
            table.add_column(column, justify="left" if column == title else "right")
        for name, g in groups.items():
            table.add_row(
                name,
                str(g.count),
                str(g.errors),
                *(format_duration(round(ms * 1e6)) for ms in (g.p50_ms, g.p95_ms, g.max_ms)),
            )
        out.print(table)
    if result.by_model:
        table = Table(title="by model", title_justify="left")
        for column in ("model", "tokens in", "tokens out", "cost"):
            table.add_column(column, justify="left" if column == "model" else "right")
        for model, (tokens_in, tokens_out, cost) in result.by_model.items():
            table.add_row(model, str(tokens_in), str(tokens_out), format_cost(cost))
        out.print(table)


@fail_cleanly
def ui(
    port: Annotated[
        int, typer.Option("--port", "-p", min=0, max=65535, help="Port on 127.0.0.1.")
    ] = 8765,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Browse runs and traces in a local web viewer on http://127.0.0.1:PORT/ (Ctrl-C stops)."""
    from keel.observe.ui import TraceViewer

    viewer = TraceViewer(_store(config, data_dir), port=port)
    err.print(f"Keel trace viewer on {viewer.url} (Ctrl-C to stop)", highlight=False)
    try:
        viewer.serve_forever()
    finally:
        viewer.close()
