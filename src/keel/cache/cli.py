"""``keel cache``: calibrate the semantic threshold, inspect and clear the response cache.

Mounted by ``keel.cli`` as ``keel cache``. Expected failures go through
``keel.console.fail_cleanly``: one ``error: ...`` line on stderr and exit status 1.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from keel.console import ConfigOption, DataDirOption, fail_cleanly, out

if TYPE_CHECKING:
    from keel.cache.base import CacheStats
    from keel.config import KeelSettings

__all__ = ["app"]

app = typer.Typer(
    help="The response cache: calibrate the semantic threshold, show and clear entries.",
    no_args_is_help=True,
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


def _settings(config: Path | None, data_dir: Path | None) -> KeelSettings:
    from keel.config import load_settings

    overrides: dict[str, Any] = {} if data_dir is None else {"data_dir": data_dir}
    return load_settings(overrides, config_file=config)


@app.command()
@fail_cleanly
def calibrate(
    dataset: Annotated[
        Path | None,
        typer.Argument(
            help="Labelled pairs (JSONL or CSV: a, b, paraphrase). Default: the set Keel ships.",
            show_default=False,
        ),
    ] = None,
    target: Annotated[
        float,
        typer.Option("--target", min=0.0, max=0.5, help="Highest wrong-hit rate allowed."),
    ] = 0.01,
    folds: Annotated[int, typer.Option("--folds", min=2, help="Cross-validation folds.")] = 5,
    as_json: JsonOption = False,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Measure hit and wrong-hit rates of the configured embedder and pick the threshold."""
    from keel.cache.calibrate import calibrate as run
    from keel.cache.calibrate import load_pairs
    from keel.memory.factory import create_embedder

    settings = _settings(config, data_dir)
    pairs = load_pairs(dataset)
    embedder = create_embedder(settings.embeddings)
    result = asyncio.run(run(embedder, pairs, target=target, folds=folds))
    if as_json:
        out.print_json(result.model_dump_json())
        return
    out.print(
        f"{result.dataset}: {result.pairs} pairs ({result.paraphrases} paraphrases, "
        f"{result.non_paraphrases} non-paraphrases), embedder {result.embedder}",
        highlight=False,
        markup=False,
    )
    out.print("threshold  hit rate (paraphrases)  wrong-hit rate (non-paraphrases)", markup=False)
    for row in result.table:
        mark = "  <- chosen" if row.threshold == result.threshold else ""
        out.print(
            f"{row.threshold:9.3f}  {row.hit_rate:22.1%}  {row.wrong_hit_rate:32.1%}{mark}",
            highlight=False,
            markup=False,
        )
    out.print(
        f"chosen threshold {result.threshold:.3f} (target wrong-hit rate {result.target:.1%})",
        highlight=False,
    )
    out.print(
        f"held out ({result.folds}-fold, by group): hit rate {result.heldout_hit_rate:.1%}, "
        f"wrong-hit rate {result.heldout_wrong_hit_rate:.1%} "
        f"(95% upper bound {result.heldout_wrong_hit_upper95:.1%})",
        highlight=False,
    )
    out.print(f"set it with: [cache] threshold = {result.threshold:.3f}", markup=False)


def _print_stats(stats: CacheStats) -> None:
    out.print(
        f"{stats.backend} cache at {stats.location}: {stats.entries} entries, "
        f"{stats.semantic_entries} with a vector",
        highlight=False,
        markup=False,
    )
    if not stats.namespaces:
        out.print("no entries", highlight=False)
    for ns in stats.namespaces:
        out.print(
            f"  {ns.namespace:<24} {ns.entries:8d} entries {ns.semantic_entries:8d} semantic",
            highlight=False,
            markup=False,
        )


@app.command()
@fail_cleanly
def stats(
    as_json: JsonOption = False,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Show the live entries of the configured cache, per namespace."""
    from keel.cache.factory import open_cache_backend

    async def main() -> CacheStats:
        backend = open_cache_backend(_settings(config, data_dir))
        try:
            return await backend.stats()
        finally:
            await backend.close()

    result = asyncio.run(main())
    if as_json:
        out.print_json(result.model_dump_json())
    else:
        _print_stats(result)


@app.command()
@fail_cleanly
def clear(
    namespace: Annotated[
        str | None,
        typer.Option(
            "--namespace",
            "-n",
            help="Clear only this namespace and those below it (tenant clears tenant/agent).",
            show_default=False,
        ),
    ] = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Remove cached responses: all of them, or one namespace's."""
    from keel.cache.factory import open_cache_backend

    async def main() -> int:
        backend = open_cache_backend(_settings(config, data_dir))
        try:
            return await backend.clear(namespace)
        finally:
            await backend.close()

    removed = asyncio.run(main())
    where = "" if namespace is None else f" from namespace {namespace!r}"
    out.print(f"removed {removed} entries{where}", highlight=False, markup=False)
