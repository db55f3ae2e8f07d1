"""``keel eval`` and ``keel replay``: run an eval dataset, replay a recorded run.

Mounted by ``keel.cli`` as two commands (``app.command("eval")(eval_dataset)``,
``app.command("replay")(replay)``). Expected failures go through ``keel.console.fail_cleanly``:
one ``error: ...`` line on stderr and exit status 1; a failing or regressed case exits with 1.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from keel.console import ConfigOption, DataDirOption, err, fail_cleanly, out
from keel.errors import ConfigError

if TYPE_CHECKING:
    from keel.config import KeelSettings
    from keel.evals.dataset import Dataset, JudgeCheck
    from keel.evals.report import EvalReport
    from keel.graph.grounded import DocumentQA, GroundedAnswer
    from keel.llm.base import Model

__all__ = ["app", "eval_dataset", "record_answer", "recordings_path", "replay"]

app = typer.Typer(
    help="Evaluate agents on datasets; replay recorded runs.",
    no_args_is_help=True,
)


def recordings_path(settings: KeelSettings) -> Path:
    """The SQLite file of recorded runs, next to the other stores."""
    return settings.data_dir / "recordings.db"


async def record_answer(
    settings: KeelSettings, qa: DocumentQA, question: str, docs: Path
) -> GroundedAnswer:
    """``qa.ask(question)``, recorded into the data directory's recordings file (``keel ask
    --record``); prints the run id to replay it with."""
    from keel.evals.record import RecordStore, record_ask

    store = RecordStore(recordings_path(settings))
    where = str(docs.resolve())  # noqa: ASYNC240 - one path lookup
    answer, run_id = await record_ask(qa, question, store, meta={"docs": where})
    err.print(f"Recorded run {run_id[:12]}: keel replay {run_id[:12]}", highlight=False)
    return answer


def _settings(config: Path | None, data_dir: Path | None, model: str | None) -> KeelSettings:
    from keel.config import load_settings

    overrides: dict[str, Any] = {}
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    if model is not None:
        overrides["llm"] = {"model": model}
    return load_settings(overrides, config_file=config)


def _open_model(dataset: Dataset, settings: KeelSettings, spec: str | None) -> Model:
    """``--model`` if given, else the dataset target's model factory, else the configured one."""
    from keel.evals.dataset import resolve_reference
    from keel.llm.base import Model
    from keel.stack import open_model

    if spec is None and dataset.target.model is not None:
        factory = resolve_reference(dataset.target.model, what="model factory")
        model = factory() if callable(factory) and not isinstance(factory, Model) else factory
        if not isinstance(model, Model):
            raise ConfigError(f"{dataset.target.model} did not give a keel.llm.Model")
        return model
    return open_model(settings)


async def _evaluate(
    dataset: Dataset,
    settings: KeelSettings,
    *,
    spec: str | None,
    judge_spec: str | None,
    runs: int | None,
    temperature: float | None,
    seed: int,
    record: bool,
    quiet: bool,
    case_ids: list[str],
    source: str = "",
    executor: str = "local",
) -> EvalReport:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from keel.evals.record import RecordStore
    from keel.evals.runner import run_dataset, subject_for
    from keel.stack import open_model

    cases = dataset.cases
    if case_ids:
        known = {c.id for c in dataset.cases}
        unknown = [i for i in case_ids if i not in known]
        if unknown:
            raise ConfigError(f"no case {unknown[0]!r} in {dataset.name}")
        cases = [c for c in dataset.cases if c.id in case_ids]
    if executor != "local":
        return await _evaluate_on_executor(
            dataset,
            settings,
            source=source,
            executor=executor,
            spec=spec,
            judge_spec=judge_spec,
            runs=runs,
            temperature=temperature,
            seed=seed,
            record=record,
            quiet=quiet,
            cases=cases,
        )
    model = _open_model(dataset, settings, spec)
    judges: dict[str | None, Model] = {}
    if judge_spec is not None:
        judges[None] = open_model(settings, judge_spec)

    def judge_for(check: JudgeCheck) -> Model | None:
        key = check.model
        if key not in judges:
            judges[key] = model if key is None else open_model(settings, key)
        return judges[key]

    store = RecordStore(recordings_path(settings)) if record else None
    try:
        opened = await subject_for(dataset, settings=settings, record=store)
        try:
            total = sum(runs if runs is not None else dataset.runs_of(c) for c in cases)
            with Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("runs, {task.fields[passed]} passed"),
                TimeElapsedColumn(),
                console=err,
                transient=True,
                disable=quiet,
            ) as bar:
                task = bar.add_task(f"Evaluating {dataset.name}", total=total, passed=0)
                passed = 0

                def show(case: Any, run: int, ok: bool) -> None:
                    nonlocal passed
                    passed += ok
                    bar.update(task, advance=1, passed=passed, description=f"{case.id} #{run}")

                return await run_dataset(
                    dataset,
                    model,
                    opened.subject,
                    runs=runs,
                    judge=judge_for,
                    temperature=temperature,
                    seed=seed,
                    progress=show,
                    cases=cases,
                    target=opened.description,
                )
        finally:
            await opened.close()
    finally:
        for judge in {id(j): j for j in judges.values() if j is not model}.values():
            await judge.aclose()
        await model.aclose()


async def _evaluate_on_executor(
    dataset: Dataset,
    settings: KeelSettings,
    *,
    source: str,
    executor: str,
    spec: str | None,
    judge_spec: str | None,
    runs: int | None,
    temperature: float | None,
    seed: int,
    record: bool,
    quiet: bool,
    cases: list[Any],
) -> EvalReport:
    """Every (case, run) as a task on the executor (Ray): the workers build the target."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from keel.distributed.base import MapProgress
    from keel.distributed.evals import EvalWork
    from keel.distributed.factory import create_executor
    from keel.evals.runner import run_dataset

    where = Path(source)
    # Workers load the dataset themselves: a file by its absolute path (a shared volume on a
    # cluster), a shipped suite or a 'module:name' by name.
    located = str(where.resolve()) if where.is_file() else source  # noqa: ASYNC240
    work = EvalWork(
        dataset=located,
        model=spec,
        judge=judge_spec,
        settings=settings,
        record=str(recordings_path(settings).resolve()) if record else None,
    )
    total = sum(runs if runs is not None else dataset.runs_of(c) for c in cases)
    async with create_executor(settings.distributed, executor) as pool:
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("runs, {task.fields[errors]} errors"),
            TimeElapsedColumn(),
            console=err,
            transient=True,
            disable=quiet,
        ) as bar:
            task = bar.add_task(f"Evaluating {dataset.name} on {pool.name}", total=total, errors=0)

            def show(done: MapProgress) -> None:
                bar.update(task, completed=done.done, errors=done.failed)

            return await run_dataset(
                dataset,
                None,
                None,
                runs=runs,
                temperature=temperature,
                seed=seed,
                cases=cases,
                executor=pool,
                work=work,
                executor_progress=show,
            )


def _print_failures(report: EvalReport) -> None:
    for case in report.cases:
        if case.verdict == "pass":
            continue
        reasons = [f for r in case.records if not r.passed for f in r.failures]
        if reasons:
            out.print(
                f"[bold]{escape(case.id)}[/]: {escape(reasons[0])}", highlight=False, soft_wrap=True
            )


@app.command("eval")
@fail_cleanly
def eval_dataset(
    dataset: Annotated[
        str,
        typer.Argument(
            help="A dataset file (.yaml, .json or .py) or the name of a shipped suite ('demo')."
        ),
    ],
    model: Annotated[
        str | None,
        typer.Option(
            "--model", "-m", help="Model to evaluate. Default: llm.model.", show_default=False
        ),
    ] = None,
    runs: Annotated[
        int | None,
        typer.Option(
            "--runs", "-n", min=1, max=1000, help="Runs per case. Default: the dataset's."
        ),
    ] = None,
    judge: Annotated[
        str | None,
        typer.Option(
            "--judge",
            help="Model for judge checks. Default: the evaluated model.",
            show_default=False,
        ),
    ] = None,
    temperature: Annotated[
        float | None,
        typer.Option(
            "--temperature",
            min=0.0,
            max=2.0,
            help="Sampling temperature of every run. Default: the dataset's.",
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Run i samples with seed SEED+i.")] = 0,
    case: Annotated[
        list[str] | None, typer.Option("--case", help="Run only this case (repeatable).")
    ] = None,
    html: Annotated[
        Path | None, typer.Option("--html", help="Write an HTML report here.", show_default=False)
    ] = None,
    json_out: Annotated[
        Path | None,
        typer.Option("--json", help="Write the report as JSON here.", show_default=False),
    ] = None,
    baseline: Annotated[
        Path | None,
        typer.Option(
            "--baseline",
            help="Compare with this saved report; flag significant drops.",
            show_default=False,
        ),
    ] = None,
    save_baseline: Annotated[
        Path | None,
        typer.Option(
            "--save-baseline", help="Save this run's report as a baseline.", show_default=False
        ),
    ] = None,
    alpha: Annotated[
        float,
        typer.Option("--alpha", min=0.0001, max=0.5, help="Significance level of regressions."),
    ] = 0.05,
    test: Annotated[
        str, typer.Option("--test", help="Regression test: 'fisher' (exact) or 'z'.")
    ] = "fisher",
    record: Annotated[
        bool, typer.Option("--record", help="Record every run (replay with keel replay RUN).")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    executor: Annotated[
        str | None,
        typer.Option(
            "--executor",
            help="Where runs execute: 'local' (one after another, here) or 'ray' (one Ray task "
            "per run at distributed.ray_address). Default: distributed.executor.",
            show_default=False,
        ),
    ] = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Run DATASET: each case N times; pass rates with confidence intervals; exit 1 on a failure.

    A case fails when its pass rate's lower bound is under its threshold or it regressed.
    """
    from keel.evals.dataset import load_dataset
    from keel.evals.regression import compare
    from keel.evals.report import EvalReport, render_html, render_table

    if test not in ("fisher", "z"):
        raise typer.BadParameter("choose 'fisher' or 'z'", param_hint="--test")
    if executor is not None and executor not in ("local", "ray"):
        raise typer.BadParameter("choose 'local' or 'ray'", param_hint="--executor")
    loaded = load_dataset(dataset)
    before = EvalReport.load(baseline) if baseline is not None else None
    settings = _settings(config, data_dir, model)
    report = asyncio.run(
        _evaluate(
            loaded,
            settings,
            spec=model,
            judge_spec=judge,
            runs=runs,
            temperature=temperature,
            seed=seed,
            record=record,
            quiet=quiet,
            case_ids=case or [],
            source=dataset,
            executor=executor or settings.distributed.executor,
        )
    )
    if before is not None and baseline is not None:
        report = compare(report, before, alpha=alpha, test=test, baseline_name=baseline.name)  # type: ignore[arg-type]
    out.print(render_table(report))
    _print_failures(report)
    if html is not None:
        html.write_text(render_html(report), encoding="utf-8")
        err.print(f"HTML report: {html}", highlight=False)
    if json_out is not None:
        report.save(json_out)
    if save_baseline is not None:
        report.save(save_baseline)
        err.print(f"Baseline saved: {save_baseline}", highlight=False)
    if not report.ok:
        raise typer.Exit(1)


@app.command("replay")
@fail_cleanly
def replay(
    run: Annotated[
        str | None, typer.Argument(help="A recorded run id, or its first 6+ characters.")
    ] = None,
    list_runs: Annotated[bool, typer.Option("--list", help="List recorded runs.")] = False,
    save_case: Annotated[
        Path | None,
        typer.Option(
            "--save-case",
            help="Append the run as a regression case to this YAML dataset.",
            show_default=False,
        ),
    ] = None,
    exact: Annotated[
        bool, typer.Option("--exact", help="With --save-case: also expect the exact answer.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the replayed output as JSON.")
    ] = False,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Re-execute a recorded run offline from its recording (no model, no tools, no network)."""
    import json
    import time

    from keel.evals.record import RecordStore
    from keel.evals.replay import replay_run

    settings = _settings(config, data_dir, None)
    store = RecordStore(recordings_path(settings))
    if list_runs:
        runs = store.runs()
        if not runs:
            err.print(f"no runs recorded yet in {store.path}", highlight=False)
        for r in runs:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created))
            what = r.meta.get("question") or r.meta.get("case") or ""
            status = "ok" if r.error is None else "error"
            out.print(
                f"{r.run_id[:12]}  {when}  {r.kind:<5}  {status:<5}  {what}",
                markup=False,
                highlight=False,
            )
        return
    if run is None:
        raise typer.BadParameter("give a run id (or --list)", param_hint="RUN")
    recorded = store.load(run)
    result = asyncio.run(replay_run(recorded))
    if as_json:
        out.print_json(json.dumps(result.output))
    else:
        out.print(
            f"Replayed run {recorded.run_id[:12]} ({recorded.kind}, "
            f"{len(recorded.steps)} steps, offline)",
            highlight=False,
        )
        out.print(result.text or "(no answer)", markup=False, highlight=False, soft_wrap=True)
    if not result.identical:
        raise ConfigError(
            f"replay of run {recorded.run_id[:12]} gave a different output than recorded"
        )
    err.print("identical to the recorded output", highlight=False)
    if save_case is not None:
        from keel.evals.casefile import append_case, case_from_run, dataset_for_run

        case = case_from_run(recorded, exact=exact)
        append_case(save_case, case, dataset_for_run(recorded, save_case.stem))
        err.print(f"Added case {case['id']} to {save_case}", highlight=False)
