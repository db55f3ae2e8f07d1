"""The ``keel`` command: ask questions of documents, run the demo, inspect traces, check the stack.

Every expected failure (``KeelError``) is printed as one line on stderr with a non-zero exit
status; tracebacks are for bugs only.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from keel.config import KeelSettings, load_settings
from keel.console import ConfigOption, DataDirOption, err, fail_cleanly, out
from keel.errors import DocumentError

if TYPE_CHECKING:
    from keel.distributed.base import Executor
    from keel.graph.grounded import GroundedAnswer
    from keel.memory.ingest import IngestProgress, IngestReport
    from keel.observe.base import TraceStore
    from keel.stack import Memory

__all__ = ["app", "main"]

DEMO_QUESTION = "How hot is the surface of Venus, and what is its atmosphere made of?"

app = typer.Typer(
    name="keel",
    help="Keel: agents that plan, remember, act and recover. Runs offline with an embedded model.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"keel {version('keel')}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Print Keel's version and exit.",
            is_eager=True,
            callback=_print_version,
        ),
    ] = False,
) -> None:
    """Keel: agents that plan, remember, act and recover. Runs offline with an embedded model."""


# Kept as a name here for command modules written against ``keel.cli``.
_fail_cleanly = fail_cleanly

ModelOption = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="Model to answer with: 'local' (SmolLM2-135M, the default) or "
        "'local:/path/to/model.gguf'. Default: llm.model from keel.toml or KEEL_LLM__MODEL.",
        show_default=False,
    ),
]


def _settings(
    config: Path | None, data_dir: Path | None = None, model: str | None = None
) -> KeelSettings:
    overrides: dict[str, Any] = {}
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    if model is not None:
        overrides["llm"] = {"model": model}
    return load_settings(overrides, config_file=config)


async def _ingest(
    memory: Memory,
    docs: Path,
    *,
    quiet: bool,
    namespace: str | None = None,
    executor: Executor | None = None,
) -> IngestReport:
    """Ingest with a progress bar on stderr, inside an ``ingest`` span."""
    from opentelemetry import trace
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    with (
        trace.get_tracer("keel.cli").start_as_current_span(f"ingest {docs.name}") as span,
        Progress(
            TextColumn("Ingesting {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("files, {task.fields[chunks]} chunks embedded"),
            console=err,
            transient=True,
            disable=quiet,
        ) as bar,
    ):
        task = bar.add_task(docs.name, total=None, chunks=0)

        def show(p: IngestProgress) -> None:
            bar.update(task, completed=p.files_done, total=p.files_total, chunks=p.chunks_embedded)

        report = await memory.ingest(docs, show, namespace=namespace, executor=executor)
        for key, value in report.model_dump(exclude={"failed"}).items():
            span.set_attribute(f"keel.ingest.{key}", value)
        span.set_attribute("keel.ingest.files_failed", report.files_failed)
    for failure in report.failed:  # a warning, so shown even with --quiet
        err.print(
            f"skipped {failure.source}: {failure.reason}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    if not quiet:
        err.print(
            f"Ingested {docs}: {report.files_added} new, {report.files_updated} changed, "
            f"{report.files_unchanged} unchanged, {report.files_removed} removed, "
            f"{report.files_failed} skipped; {report.chunks_embedded} chunks embedded, "
            f"{report.chunks_cached} from cache, {report.chunks_total} in memory.",
            highlight=False,
        )
    return report


async def _answer(
    settings: KeelSettings, docs: Path, question: str, *, quiet: bool
) -> GroundedAnswer:
    """Open the model first (a bad model fails before any embedding work), ingest, answer."""
    from opentelemetry import trace

    from keel.stack import open_memory, open_model

    with trace.get_tracer("keel.cli").start_as_current_span("keel ask") as root:
        root.set_attribute("keel.docs", str(docs))
        model = open_model(settings)
        memory = open_memory(settings)
        try:
            await _ingest(memory, docs, quiet=quiet)
            status = err.status(f"Answering with {model.name}...")
            with nullcontext() if quiet else status:
                qa = memory.question_answerer(model, docs)
                if settings.evals.record:
                    from keel.evals.cli import record_answer

                    return await record_answer(settings, qa, question, docs)
                return await qa.ask(question)
        finally:
            await memory.close()
            await model.aclose()


def _print_answer(answer: GroundedAnswer, settings: KeelSettings) -> None:
    runtime = "llama.cpp, in-process" if settings.llm.model.startswith("local") else "remote"
    out.print(f"\n[bold]Question:[/] {escape(answer.question)}", highlight=False)
    out.print(f"[bold]Answer[/] (model: {answer.model_name}, {runtime}):", highlight=False)
    out.print(answer.answer or "(no answer)", markup=False, highlight=False)
    if not answer.citations:
        return
    out.print("\n[bold]Citations[/]")
    for c in answer.citations:
        snippet = " ".join(c.text.split())[:150]
        out.print(
            f"  [{c.number}] {c.label}  (chunk {c.chunk}, similarity {c.score:.2f})",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        out.print(f'      "{snippet}..."', markup=False, highlight=False, soft_wrap=True)


def _print_trace_summary(store: TraceStore | None) -> None:
    if store is None:
        return
    from keel.observe import render_summary

    trace_id = store.last_trace_id()
    if trace_id is None:
        return
    out.print()
    out.print(render_summary(store.summary(trace_id)))
    out.print(f"Full trace: keel trace show {trace_id[:12]}", highlight=False)


@app.command()
@fail_cleanly
def ask(
    question: Annotated[str, typer.Argument(help="The question to answer from the documents.")],
    docs: Annotated[
        Path,
        typer.Option(
            "--docs",
            "-d",
            help="A Markdown/text file or a folder of them. Ingested incrementally: unchanged "
            "files are not embedded again.",
        ),
    ],
    model: ModelOption = None,
    top_k: Annotated[
        int | None,
        typer.Option("--top-k", "-k", min=1, max=50, help="Passages to retrieve. Default: 4."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the answer and citations as JSON.")
    ] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bar and no trace summary.")
    ] = False,
    record: Annotated[
        bool,
        typer.Option("--record", help="Record the run for `keel replay` (or evals.record)."),
    ] = False,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Answer QUESTION from the documents in --docs, with numbered citations."""
    if not question.strip():
        raise typer.BadParameter("the question is empty", param_hint="QUESTION")
    if not docs.exists():
        raise DocumentError(f"document path does not exist: {docs}")
    settings = _settings(config, data_dir, model)
    if top_k is not None:
        settings.memory.top_k = top_k
    if record:
        settings.evals.record = True
    from keel.stack import open_tracing

    store = open_tracing(settings)
    answer = asyncio.run(_answer(settings, docs, question, quiet=quiet or as_json))
    if as_json:
        out.print_json(answer.model_dump_json())
        return
    _print_answer(answer, settings)
    if not quiet:
        _print_trace_summary(store)


@app.command()
@fail_cleanly
def demo(
    question: Annotated[
        str, typer.Option("--question", help="Ask something else of the demo corpus.")
    ] = DEMO_QUESTION,
    model: ModelOption = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Answer a fixed question from the shipped Solar System guide, then show the trace summary."""
    corpus = Path(__file__).parent / "demo" / "corpus"
    out.print(f"Keel demo: a document-grounded agent over {corpus}", highlight=False)
    settings = _settings(config, data_dir, model)
    from keel.stack import open_tracing

    store = open_tracing(settings)
    started = time.perf_counter()
    answer = asyncio.run(_answer(settings, corpus, question, quiet=False))
    _print_answer(answer, settings)
    _print_trace_summary(store)
    out.print(f"Demo finished in {time.perf_counter() - started:.1f} s.", highlight=False)


@app.command()
@fail_cleanly
def ingest(
    path: Annotated[
        Path,
        typer.Argument(help="A file (Markdown, text, HTML, PDF, DOCX) or a folder of them."),
    ],
    namespace: Annotated[
        str | None,
        typer.Option(
            "--namespace",
            "-n",
            help="Namespace to ingest into (one per tenant or agent). Default: one derived "
            "from the path's absolute location.",
            show_default=False,
        ),
    ] = None,
    executor: Annotated[
        str | None,
        typer.Option(
            "--executor",
            help="Where loading, chunking and embedding run: 'local' (this process) or 'ray' "
            "(tasks on distributed.ray_address). Default: distributed.executor.",
            show_default=False,
        ),
    ] = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Ingest documents into vector memory (incremental: only changed files are embedded)."""
    settings = _settings(config, data_dir)
    from keel.stack import open_memory, open_tracing

    async def go() -> IngestReport:
        from keel.distributed.factory import create_executor

        chosen = executor or settings.distributed.executor
        runner = None if chosen == "local" else create_executor(settings.distributed, chosen)
        memory = open_memory(settings)
        try:
            return await _ingest(memory, path, quiet=False, namespace=namespace, executor=runner)
        finally:
            if runner is not None:
                await runner.close()
            await memory.close()

    open_tracing(settings)
    report = asyncio.run(go())
    out.print_json(report.model_dump_json())


@app.command()
@fail_cleanly
def doctor(
    model: ModelOption = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Check every layer: which backend it uses, whether it works, and what to install if not."""
    from keel.doctor import render_checks, run_checks

    settings = _settings(config, data_dir, model)
    checks = asyncio.run(run_checks(settings))
    out.print(render_checks(checks))
    if any(not c.ok for c in checks):
        raise typer.Exit(1)


def _mount_layer_commands() -> None:
    """Each layer keeps its commands in its own module; they are mounted here."""
    from keel.budget.cli import app as budget_app
    from keel.cache.cli import app as cache_app
    from keel.evals.cli import eval_dataset, replay
    from keel.graph.cli import app as graph_app
    from keel.guard.cli import app as policy_app
    from keel.memory.cli import app as memory_app
    from keel.observe.cli import app as trace_app
    from keel.observe.cli import ui as ui_command
    from keel.sandbox.cli import app as sandbox_app
    from keel.serve.cli import app as serve_app
    from keel.tools.cli import app as tools_app
    from keel.tools.mcp_cli import app as mcp_app

    app.add_typer(trace_app, name="trace")
    app.command("ui")(ui_command)
    app.add_typer(graph_app, name="graph")
    app.add_typer(memory_app, name="memory")
    app.add_typer(tools_app, name="tools")
    app.add_typer(mcp_app, name="mcp")
    app.add_typer(sandbox_app, name="sandbox")
    app.add_typer(serve_app, name="serve")
    app.add_typer(policy_app, name="policy")
    app.add_typer(budget_app, name="budget")
    app.add_typer(cache_app, name="cache")
    # Commands, not sub-apps: `keel eval DATASET`, `keel replay RUN`.
    app.command("eval")(eval_dataset)
    app.command("replay")(replay)


_mount_layer_commands()


def main() -> None:
    """Entry point of the ``keel`` script."""
    app(prog_name="keel")


if __name__ == "__main__":  # pragma: no cover
    main()
