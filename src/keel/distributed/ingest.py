"""``keel ingest`` on an executor: load, chunk and embed as tasks; write here.

Files go to the executor in batches: each task reads, hashes and (when changed) chunks its files
exactly as ``DocumentIngestor`` does in-process, and reports a file it cannot load as that file's
failure. Then the chunk texts that the embedding cache does not hold are embedded in batches by
embedders built on the workers (``worker_embedder``, a picklable factory), and the vectors are put
in the cache. The driver alone writes the manifest and the store (SQLite has one writer), through
the usual incremental path, which now finds every vector in the cache. Paths are read by the
workers: on a cluster they must see the same files (a shared volume).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel.errors import KeelError
from keel.memory.base import Embedder, TokenCounting
from keel.memory.cache import CachedEmbedder, text_sha256

if TYPE_CHECKING:
    from keel.memory.ingest import DocumentIngestor, FileFailure, _Document, _Entry
    from keel.memory.loaders import Loader

__all__ = ["embed_remote", "read_remote"]

_EMBEDDERS: dict[str, Embedder] = {}
"""Embedders built in this worker process, by the repr of their factory: built once, reused."""


def _worker_embedder(factory: Callable[[], Embedder]) -> Embedder:
    key = repr(factory)
    if key not in _EMBEDDERS:
        _EMBEDDERS[key] = factory()
    return _EMBEDDERS[key]


@dataclass
class _Reader:
    """What ``DocumentIngestor._read`` uses, without the store and the embedder: picklable."""

    max_file_bytes: int
    recipe: str
    loaders: dict[str, Loader]
    max_chars: int
    overlap: int
    max_tokens: int | None
    tokens_from: Callable[[], Embedder] | None
    count_tokens: Callable[[str], int] | None = None


def _read_batch(
    reader: _Reader, batch: list[tuple[str, str, _Entry | None]]
) -> list[_Document | FileFailure]:
    """A task: read, hash and chunk a batch of files; a file that fails becomes a FileFailure."""
    from keel.memory.ingest import DocumentIngestor, FileFailure

    if reader.tokens_from is not None and reader.count_tokens is None:
        counting = _worker_embedder(reader.tokens_from)
        if isinstance(counting, TokenCounting):
            reader.count_tokens = counting.count_tokens
    out: list[_Document | FileFailure] = []
    for source, path, entry in batch:
        try:
            out.append(DocumentIngestor._read(reader, source, Path(path), entry))  # type: ignore[arg-type]
        except KeelError as e:
            out.append(FileFailure(source=source, reason=str(e)))
    return out


async def read_remote(
    ingestor: DocumentIngestor, files: list[tuple[str, Path]], entries: dict[str, _Entry]
) -> tuple[list[_Document], list[FileFailure]]:
    """``DocumentIngestor._read_all`` on the ingestor's executor, in batches of files."""
    from keel.memory.ingest import FileFailure, _Document

    assert ingestor.executor is not None
    reader = _Reader(
        max_file_bytes=ingestor.max_file_bytes,
        recipe=ingestor.recipe,
        loaders=ingestor.loaders,
        max_chars=ingestor.max_chars,
        overlap=ingestor.overlap,
        max_tokens=ingestor.max_tokens,
        tokens_from=ingestor.worker_embedder if ingestor.count_tokens is not None else None,
    )
    items = [(source, str(path.resolve()), entries.get(source)) for source, path in files]
    size = ingestor.batch_size
    batches = [items[i : i + size] for i in range(0, len(items), size)]
    results = await ingestor.executor.map(functools.partial(_read_batch, reader), batches)
    documents: list[_Document] = []
    failed: list[FileFailure] = []
    for batch, result in zip(batches, results, strict=True):
        if not result.ok:  # the whole task failed: every file of it is reported, none lost
            reason = f"{result.error_type}: {result.error}"
            failed.extend(FileFailure(source=source, reason=reason) for source, _, _ in batch)
            continue
        for outcome in result.unwrap():
            if isinstance(outcome, _Document):
                documents.append(outcome)
            else:
                failed.append(outcome)
    return documents, failed


def _embed_batch(factory: Callable[[], Embedder], texts: list[str]) -> Any:
    """A task: embed ``texts`` with this worker's embedder (a coroutine the worker runs)."""
    return _worker_embedder(factory).embed(texts)


async def embed_remote(
    ingestor: DocumentIngestor, cache: CachedEmbedder, documents: list[_Document]
) -> int:
    """Embed, on the executor, the new chunks' texts that ``cache`` lacks, and store them in it.
    Returns how many texts the cache already held (the report's ``chunks_cached``)."""
    assert ingestor.executor is not None and ingestor.worker_embedder is not None
    texts = [c.text for d in documents if d.chunks is not None for c in d.chunks]
    keys = [text_sha256(t) for t in texts]
    found = await asyncio.to_thread(cache._lookup, sorted(set(keys)))
    missing = list({k: t for k, t in zip(keys, texts, strict=True) if k not in found}.items())
    size = ingestor.embed_batch_size
    batches = [missing[i : i + size] for i in range(0, len(missing), size)]
    task = functools.partial(_embed_batch, ingestor.worker_embedder)
    results = await ingestor.executor.map(task, [[t for _, t in b] for b in batches])
    for batch, result in zip(batches, results, strict=True):
        vectors = result.unwrap()  # a failed embedding task fails the run before any write
        if len(vectors) != len(batch) or (vectors and len(vectors[0]) != cache.dimension):
            raise KeelError(
                f"the workers' embedder does not match {cache.name}: got {len(vectors)} "
                f"vectors for {len(batch)} texts",
                hint="worker_embedder must build the same model as the driver's embedder",
            )
        await asyncio.to_thread(
            cache._store, {k: v for (k, _), v in zip(batch, vectors, strict=True)}
        )
    cache.misses += len(missing)
    return len(texts) - len(missing)
