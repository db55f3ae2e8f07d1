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
    from pydantic import BaseModel

    from keel.config import KeelSettings
    from keel.memory.base import Hit
    from keel.memory.extract import Extraction
    from keel.memory.retrieval import RetrievalMode

__all__ = ["app"]

app = typer.Typer(
    help="Inspect and search vector memory (the configured vector store).",
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
    from keel.memory.backend_stats import backend_stats

    result = asyncio.run(backend_stats(_settings(config, data_dir)))
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


def _namespace(namespace: str | None, docs: Path | None, settings: KeelSettings) -> str:
    """The namespace asked for, the one of a document folder, or the only one there is."""
    if namespace is not None and docs is not None:
        raise ConfigError("give --namespace or --docs, not both")
    if namespace is not None:
        return namespace
    if docs is not None:
        from keel.stack import docs_namespace

        return docs_namespace(docs)
    from keel.memory.backend_stats import backend_stats

    found = asyncio.run(backend_stats(settings))
    names = [ns.namespace for ns in found.namespaces]
    if len(names) == 1:
        return names[0]
    if not names:
        raise StoreError(f"memory at {found.path} is empty", hint="keel ingest PATH first")
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
        str | None,
        typer.Option(
            "--mode",
            help="'hybrid' (keywords and vectors, fused by rank), 'vector' or 'keyword'. "
            "Default: hybrid, or vector on a store without keyword search (Qdrant).",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the hits as JSON.")] = False,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Search one namespace of memory and print the best chunks with their sources."""
    if not query.strip():
        raise typer.BadParameter("the query is empty", param_hint="QUERY")
    if mode not in (None, "hybrid", "vector", "keyword"):
        raise typer.BadParameter("choose 'hybrid', 'vector' or 'keyword'", param_hint="--mode")
    settings = _settings(config, data_dir)
    if settings.memory.backend == "sqlite" and not settings.memory_path.is_file():
        raise StoreError(f"no memory at {settings.memory_path} yet", hint="keel ingest PATH first")
    chosen = _namespace(namespace, docs, settings)

    async def go() -> list[Hit]:
        from keel.memory import KeywordSearch, Retriever, create_embedder, create_vector_store

        embedder = create_embedder(settings.embeddings)
        store = create_vector_store(settings.memory_path, embedder.dimension, settings.memory)
        try:
            # Default: hybrid where the store has keyword search (SQLite, pgvector), else vector.
            chosen_mode = mode or ("hybrid" if isinstance(store, KeywordSearch) else "vector")
            retriever = Retriever(store, embedder, mode=cast("RetrievalMode", chosen_mode))
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


def _import_schema(spec: str) -> type[BaseModel]:
    """The Pydantic model named ``module:Class`` (the current directory is importable)."""
    import importlib
    import sys

    from pydantic import BaseModel

    module_name, _, attribute = spec.partition(":")
    hint = "give module:Class, e.g. myschemas:Invoice, importable from the current directory"
    if not module_name or not attribute:
        raise ConfigError(f"--schema {spec!r} is not of the form module:Class", hint=hint)
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        found: object = importlib.import_module(module_name)
        for part in attribute.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"cannot import schema {spec!r}: {e}", hint=hint) from e
    if not (isinstance(found, type) and issubclass(found, BaseModel)):
        raise ConfigError(f"schema {spec!r} is not a Pydantic model class", hint=hint)
    return found


@app.command()
@fail_cleanly
def extract(
    path: Annotated[Path, typer.Argument(help="The document to read (txt, md, html, pdf, docx).")],
    schema: Annotated[
        str, typer.Option("--schema", "-s", help="The Pydantic model to fill, as module:Class.")
    ],
    max_windows: Annotated[
        int | None,
        typer.Option(
            "--max-windows", min=1, help="Read at most this many windows of passages (model calls)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the extraction as JSON.")] = False,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Fill a Pydantic schema from a document with the configured model; each value is printed
    with the passages it was taken from and whether it was found in them."""
    schema_type = _import_schema(schema)
    settings = _settings(config, data_dir)

    async def go() -> Extraction[Any]:
        from keel.memory.extract import extract_document
        from keel.stack import open_model

        model = open_model(settings)
        try:
            return await extract_document(model, schema_type, path, max_windows=max_windows)
        except ValueError as e:  # a schema extraction cannot fill (a field that refuses None)
            raise ConfigError(str(e)) from e
        finally:
            await model.aclose()

    result = asyncio.run(go())
    if as_json:
        out.print_json(result.model_dump_json())
        return
    for name, status in result.status.items():
        value = getattr(result.value, name)
        out.print(f"{name}: {value!r}  [{status}]", markup=False, highlight=False)
        for cite in result.citations[name]:
            where = cite.chunk_id + (f" § {cite.heading}" if cite.heading else "")
            if cite.quote is not None:
                where += f" (chars {cite.quote_start}-{cite.quote_end})"
            out.print(f"    {where}", markup=False, highlight=False)
