"""``keel memory``: inspect and search vector memory from the command line.

Mounted by ``keel.cli`` as ``keel memory``. Expected failures go through
``keel.console.fail_cleanly``: one ``error: ...`` line on stderr and exit status 1.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ParamSpec, TypeVar, cast

import typer
from rich.console import Console

from keel.console import ConfigOption, DataDirOption, fail_cleanly
from keel.errors import ConfigError, StoreError

if TYPE_CHECKING:
    from keel.config import KeelSettings
    from keel.memory.base import Hit
    from keel.memory.retrieval import RetrievalMode

__all__ = ["app"]

app = typer.Typer(
    help="Inspect and search vector memory (the embedded SQLite + faiss store).",
    no_args_is_help=True,
)
out = Console()

P = ParamSpec("P")
R = TypeVar("R")


def _settings(config: Path | None, data_dir: Path | None) -> KeelSettings:
    from keel.config import load_settings

    overrides: dict[str, Any] = {} if data_dir is None else {"data_dir": data_dir}
    return load_settings(overrides, config_file=config)


@app.command()
@fail_cleanly
def stats(
    as_json: Annotated[bool, typer.Option("--json", help="Print the statistics as JSON.")] = False,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Show the namespaces in memory, with their chunks and documents, and the embedding cache."""
    from keel.memory.stats import memory_stats

    result = memory_stats(_settings(config, data_dir).memory_path)
    if as_json:
        out.print_json(result.model_dump_json())
        return
    out.print(
        f"{result.path}: {result.size_bytes / 1e6:.1f} MB, dimension {result.dimension}, "
        f"{result.cached_embeddings} cached embeddings",
        highlight=False,
    )
    if not result.namespaces:
        out.print("no namespaces yet", highlight=False)
    for ns in result.namespaces:
        out.print(
            f"  {ns.namespace:<24} {ns.records:8d} chunks {ns.documents:6d} documents",
            highlight=False,
            markup=False,
        )


def _namespace(namespace: str | None, docs: Path | None, memory_path: Path) -> str:
    """The namespace asked for, the one of a document folder, or the only one there is."""
    if namespace is not None and docs is not None:
        raise ConfigError("give --namespace or --docs, not both")
    if namespace is not None:
        return namespace
    if docs is not None:
        from keel.stack import docs_namespace

        return docs_namespace(docs)
    from keel.memory.stats import memory_stats

    names = [ns.namespace for ns in memory_stats(memory_path).namespaces]
    if len(names) == 1:
        return names[0]
    if not names:
        raise StoreError(f"memory at {memory_path} is empty", hint="keel ingest PATH first")
    raise ConfigError(
        "memory holds several namespaces; choose one with --namespace",
        hint="namespaces: " + ", ".join(names),
    )


def _print_hits(hits: list[Hit]) -> None:
    for rank, hit in enumerate(hits, start=1):
        where = str(hit.metadata.get("source", hit.id))
        if hit.metadata.get("page") is not None:
            where += f", page {hit.metadata['page']}"
        if hit.metadata.get("heading"):
            where += f", {hit.metadata['heading']}"
        out.print(f"{rank:2d}. [{hit.score:.4f}] {where}", markup=False, highlight=False)
        snippet = " ".join(hit.text.split())
        out.print(f"    {snippet[:200]}", markup=False, highlight=False, soft_wrap=True)


@app.command()
@fail_cleanly
def search(
    query: Annotated[str, typer.Argument(help="What to look for, in plain words.")],
    namespace: Annotated[
        str | None,
        typer.Option(
            "--namespace",
            "-n",
            help="Namespace to search. Default: the only one in memory.",
            show_default=False,
        ),
    ] = None,
    docs: Annotated[
        Path | None,
        typer.Option(
            "--docs",
            "-d",
            help="Search the namespace of this ingested document folder or file.",
            show_default=False,
        ),
    ] = None,
    k: Annotated[int, typer.Option("--top-k", "-k", min=1, max=100, help="Hits to show.")] = 5,
    mode: Annotated[
        str,
        typer.Option(
            "--mode",
            help="'hybrid' (keywords and vectors, fused by rank), 'vector' or 'keyword'.",
        ),
    ] = "hybrid",
    as_json: Annotated[bool, typer.Option("--json", help="Print the hits as JSON.")] = False,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Search one namespace of memory and print the best chunks with their sources."""
    if not query.strip():
        raise typer.BadParameter("the query is empty", param_hint="QUERY")
    if mode not in ("hybrid", "vector", "keyword"):
        raise typer.BadParameter("choose 'hybrid', 'vector' or 'keyword'", param_hint="--mode")
    settings = _settings(config, data_dir)
    if not settings.memory_path.is_file():
        raise StoreError(f"no memory at {settings.memory_path} yet", hint="keel ingest PATH first")
    chosen = _namespace(namespace, docs, settings.memory_path)

    async def go() -> list[Hit]:
        from keel.memory import Retriever, create_embedder, create_vector_store

        embedder = create_embedder(settings.embeddings)
        store = create_vector_store(settings.memory_path, embedder.dimension)
        try:
            retriever = Retriever(store, embedder, mode=cast("RetrievalMode", mode))
            return await retriever.retrieve(query, chosen, k)
        finally:
            await store.close()

    hits = asyncio.run(go())
    if as_json:
        out.print_json(data=[hit.model_dump() for hit in hits])
    elif not hits:
        out.print(f"no hits in namespace {chosen}", highlight=False, markup=False)
    else:
        _print_hits(hits)
