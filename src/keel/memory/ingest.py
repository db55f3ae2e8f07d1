"""Incremental document ingestion: load, chunk, embed and store, skipping what has not changed.

A manifest table (``documents``) records, per namespace and source file, the sha256 of its
content and the ids of its chunks. Every file is read and checked before anything is written. A
file that cannot be loaded (corrupt, binary, too big, not UTF-8) is reported in
``IngestReport.failed`` and left as it was in the store; the other files are ingested. A file's
manifest row lists every chunk id it may have in the store before those chunks are written, so a
run interrupted at any point is completed, not orphaned, by the next one. Vectors go through an
embedding cache in the manifest's file, so chunk text that was embedded once is never embedded
again, even when the file around it changed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

from keel.errors import DocumentError, EmptyCorpusError, KeelError, StoreError
from keel.memory.base import Embedder, MetadataValue, TokenCounting, VectorRecord, VectorStore
from keel.memory.cache import CachedEmbedder
from keel.memory.chunking import Chunk, chunk_document
from keel.memory.loaders import LOADERS, Loader

if TYPE_CHECKING:
    from keel.distributed.base import Executor

__all__ = [
    "DEFAULT_MAX_FILE_BYTES",
    "SUPPORTED_SUFFIXES",
    "DocumentIngestor",
    "FileFailure",
    "IngestProgress",
    "IngestReport",
]

SUPPORTED_SUFFIXES = tuple(LOADERS)
DEFAULT_MAX_FILE_BYTES = 50 * 1024 * 1024
"""Files larger than this are reported and skipped: a 2 GB log is not a document."""
EMBED_GROUP = 64
"""Chunks embedded and stored per step, so progress moves within a long file."""


class IngestProgress(BaseModel):
    """Where an ingest run is: enough to draw a progress bar."""

    model_config = ConfigDict(frozen=True)

    files_done: int
    files_total: int
    chunks_embedded: int
    source: str


class FileFailure(BaseModel):
    """A file the ingest skipped, and why."""

    model_config = ConfigDict(frozen=True)

    source: str
    reason: str


class IngestReport(BaseModel):
    """What an ingest run did, file by file and chunk by chunk.

    ``chunks_embedded`` counts texts the embedding model computed; ``chunks_cached`` those whose
    vectors came from the embedding cache. ``failed`` lists the files skipped, with the reason.
    """

    model_config = ConfigDict(frozen=True)

    files_added: int = 0
    files_updated: int = 0
    files_unchanged: int = 0
    files_removed: int = 0
    files_skipped: int = 0
    chunks_embedded: int = 0
    chunks_cached: int = 0
    chunks_total: int = 0
    failed: list[FileFailure] = []

    @property
    def files_failed(self) -> int:
        """How many files were skipped because they could not be loaded."""
        return len(self.failed)


@dataclass
class _Entry:
    """A manifest row: content hash (None while a write is in flight), recipe and chunk ids."""

    sha256: str | None
    recipe: str
    chunk_ids: list[str]


@dataclass
class _Document:
    source: str
    sha256: str
    chunks: list[Chunk] | None = None  # None: unchanged since the manifest was written
    known: bool = False  # the manifest has a row for it
    ids: list[str] = field(default_factory=list)


class _Manifest:
    """The ``documents`` table: per (namespace, source), what is in the vector store."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self.db.execute("PRAGMA busy_timeout = 10000")
            self.db.execute("PRAGMA journal_mode = WAL")
            self.db.execute("PRAGMA synchronous = FULL")
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS documents (namespace TEXT NOT NULL, "
                "source TEXT NOT NULL, sha256 TEXT, recipe TEXT NOT NULL, "
                "chunk_ids TEXT NOT NULL, PRIMARY KEY (namespace, source))"
            )
        except (OSError, sqlite3.Error) as e:
            raise StoreError(f"cannot open the document manifest {path}: {e}") from e

    def _execute(self, sql: str, params: tuple[object, ...]) -> list[tuple[str, ...]]:
        try:
            return self.db.execute(sql, params).fetchall()
        except sqlite3.Error as e:
            raise StoreError(f"cannot use the document manifest {self.path}: {e}") from e

    def load(self, namespace: str) -> dict[str, _Entry]:
        rows = self._execute(
            "SELECT source, sha256, recipe, chunk_ids FROM documents WHERE namespace = ?",
            (namespace,),
        )
        return {src: _Entry(sha, recipe, json.loads(ids)) for src, sha, recipe, ids in rows}

    def put(self, namespace: str, source: str, entry: _Entry) -> None:
        self._execute(
            "INSERT OR REPLACE INTO documents VALUES (?, ?, ?, ?, ?)",
            (namespace, source, entry.sha256, entry.recipe, json.dumps(entry.chunk_ids)),
        )

    def remove(self, namespace: str, source: str) -> None:
        self._execute(
            "DELETE FROM documents WHERE namespace = ? AND source = ?", (namespace, source)
        )

    def clear(self, namespace: str) -> None:
        self._execute("DELETE FROM documents WHERE namespace = ?", (namespace,))

    def close(self) -> None:
        self.db.close()


def _scan(root: Path, suffixes: Mapping[str, Loader]) -> tuple[list[tuple[str, Path]], int]:
    """Supported files under ``root`` as (source, path), sorted, and how many were skipped."""
    if not root.exists():
        raise DocumentError(f"document path does not exist: {root}")
    if root.is_file():
        supported = root.suffix.lower() in suffixes
        return ([(root.name, root)] if supported else []), (0 if supported else 1)
    if not root.is_dir():
        raise DocumentError(f"document path is neither a file nor a directory: {root}")

    def fail(error: OSError) -> None:
        raise DocumentError(f"cannot read directory {error.filename}: {error.strerror}")

    files: list[tuple[str, Path]] = []
    skipped = 0
    for folder, dirnames, filenames in os.walk(root, onerror=fail):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            path = Path(folder) / name
            if name.startswith(".") or not path.is_file():
                continue
            if path.suffix.lower() in suffixes:
                files.append((path.relative_to(root).as_posix(), path))
            else:
                skipped += 1
    return sorted(files), skipped


class DocumentIngestor:
    """Ingests documents (text, Markdown, HTML, PDF, DOCX) into one namespace, incrementally.

    Chunks hold at most ``max_chars`` characters and, when the embedder counts tokens (the local
    MiniLM model does), at most ``max_tokens`` tokens (default: the embedder's input window), so
    no chunk is truncated by the model. Files over ``max_file_bytes`` are reported and skipped.
    """

    def __init__(
        self,
        store: VectorStore,
        embedder: Embedder,
        manifest_path: Path,
        *,
        max_chars: int,
        overlap: int,
        max_tokens: int | None = None,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
        loaders: Mapping[str, Loader] | None = None,
        executor: Executor | None = None,
        worker_embedder: Callable[[], Embedder] | None = None,
        batch_size: int = 8,
        embed_batch_size: int = 256,
    ) -> None:
        if max_chars < 1 or not 0 <= overlap < max_chars:
            raise ValueError("need max_chars >= 1 and 0 <= overlap < max_chars")
        if max_tokens is not None and max_tokens < 1:
            raise ValueError("max_tokens must be >= 1")
        if max_file_bytes < 1:
            raise ValueError("max_file_bytes must be >= 1")
        self.store = store
        self.embedder = embedder
        self.manifest_path = Path(manifest_path)
        self.max_chars = max_chars
        self.overlap = overlap
        self.max_file_bytes = max_file_bytes
        self.loaders = dict(LOADERS if loaders is None else loaders)
        self.count_tokens: Callable[[str], int] | None = None
        self.max_tokens = max_tokens
        counting = embedder.inner if isinstance(embedder, CachedEmbedder) else embedder
        if isinstance(counting, TokenCounting):
            self.count_tokens = counting.count_tokens
            window = counting.max_input_tokens
            self.max_tokens = window if max_tokens is None else min(max_tokens, window)
        elif max_tokens is not None:
            raise ValueError(
                f"embedder {embedder.name} cannot count tokens; leave max_tokens unset"
            )
        # A change of model, chunking or loaders makes every stored chunk out of date.
        self.recipe = f"{embedder.name}|{max_chars}|{overlap}|{self.max_tokens}|loaders-v2"
        # With an executor, files are loaded and chunked, and new chunks embedded (by embedders
        # that ``worker_embedder`` builds on the workers), as batches of tasks; the store and
        # the manifest are still written here only (see keel.distributed.ingest).
        self.executor = executor
        self.worker_embedder = worker_embedder
        self.batch_size = batch_size
        self.embed_batch_size = embed_batch_size
        if executor is not None and self.count_tokens is not None and worker_embedder is None:
            raise ValueError("chunking by tokens on an executor needs worker_embedder")

    async def ingest(
        self,
        path: Path,
        namespace: str,
        progress: Callable[[IngestProgress], None] | None = None,
    ) -> IngestReport:
        """Bring ``namespace`` in line with the files at ``path`` (a file or a directory).

        Files that cannot be loaded are reported in ``IngestReport.failed`` and left as they were.
        Raises ``DocumentError`` for a missing path, and ``EmptyCorpusError`` when there is no
        text to ingest at all (naming the files that failed); then nothing is changed.
        """
        root = Path(path)
        files, skipped = await asyncio.to_thread(_scan, root, self.loaders)
        manifest = await asyncio.to_thread(_Manifest, self.manifest_path)
        try:
            entries = await asyncio.to_thread(manifest.load, namespace)
            if entries and await self.store.count(namespace) == 0:
                # The store was emptied behind the manifest's back: start afresh.
                await asyncio.to_thread(manifest.clear, namespace)
                entries = {}
            if self.executor is None:
                documents, failed = await asyncio.to_thread(self._read_all, files, entries)
            else:
                from keel.distributed.ingest import read_remote

                documents, failed = await read_remote(self, files, entries)
            kept = sum(len(entries[f.source].chunk_ids) for f in failed if f.source in entries)
            if sum(len(d.ids) for d in documents) + kept == 0:
                raise EmptyCorpusError(
                    f"no text to ingest at {root}", hint=_empty_hint(skipped, failed)
                )
            cache = await asyncio.to_thread(CachedEmbedder, self.embedder, self.manifest_path)
            try:
                cached = None
                if self.executor is not None and self.worker_embedder is not None:
                    from keel.distributed.ingest import embed_remote

                    cached = await embed_remote(self, cache, documents)
                report = await self._apply(
                    namespace, manifest, entries, documents, cache, skipped, progress, failed
                )
            finally:
                cache.close()
            update = {"chunks_total": report.chunks_total + kept}
            if cached is not None:  # _apply found every vector embedded ahead in the cache
                update["chunks_cached"] = cached
            return report.model_copy(update=update)
        finally:
            manifest.close()

    def _read_all(
        self, files: list[tuple[str, Path]], entries: dict[str, _Entry]
    ) -> tuple[list[_Document], list[FileFailure]]:
        """Reads, hashes and (if changed) chunks every file, before anything is written."""
        documents: list[_Document] = []
        failed: list[FileFailure] = []
        for source, path in files:
            try:
                documents.append(self._read(source, path, entries.get(source)))
            except KeelError as e:
                failed.append(FileFailure(source=source, reason=str(e)))
        return documents, failed

    def _read(self, source: str, path: Path, entry: _Entry | None) -> _Document:
        """Reads and hashes one file; chunks it unless the manifest says it is unchanged."""
        try:
            size = path.stat().st_size
            if size > self.max_file_bytes:
                raise DocumentError(
                    f"file is {size / 1e6:.1f} MB, over the limit of "
                    f"{self.max_file_bytes / 1e6:.1f} MB"
                )
            data = path.read_bytes()
        except OSError as e:
            raise DocumentError(f"cannot read the file: {e.strerror}") from e
        digest = hashlib.sha256(data).hexdigest()
        document = _Document(source, digest, known=entry is not None)
        if entry is not None and entry.sha256 == digest and entry.recipe == self.recipe:
            document.ids = entry.chunk_ids
            return document
        loaded = self.loaders[path.suffix.lower()].load(data)
        document.chunks = chunk_document(
            loaded,
            max_chars=self.max_chars,
            overlap=self.overlap,
            count_tokens=self.count_tokens,
            max_tokens=self.max_tokens if self.count_tokens is not None else None,
        )
        document.ids = [f"{source}#{c.index}" for c in document.chunks]
        return document

    async def _apply(
        self,
        namespace: str,
        manifest: _Manifest,
        entries: dict[str, _Entry],
        documents: list[_Document],
        cache: CachedEmbedder,
        skipped: int,
        progress: Callable[[IngestProgress], None] | None,
        failed: list[FileFailure],
    ) -> IngestReport:
        counts = dict.fromkeys(("added", "updated", "unchanged"), 0)

        def report(done: int, source: str) -> None:
            if progress is not None:
                progress(
                    IngestProgress(
                        files_done=done,
                        files_total=len(documents),
                        chunks_embedded=cache.misses,
                        source=source,
                    )
                )

        report(0, "")
        for done, document in enumerate(documents, start=1):
            if document.chunks is None:
                counts["unchanged"] += 1
                report(done, document.source)
                continue
            counts["updated" if document.known else "added"] += 1
            old = entries[document.source].chunk_ids if document.known else []
            pending = _Entry(None, self.recipe, list(dict.fromkeys(old + document.ids)))
            await asyncio.to_thread(manifest.put, namespace, document.source, pending)
            for start in range(0, len(document.chunks), EMBED_GROUP):
                group = document.chunks[start : start + EMBED_GROUP]
                await self.store.upsert(namespace, await self._records(cache, document, group))
                report(done - 1, document.source)
            fresh = set(document.ids)
            stale = [i for i in old if i not in fresh]
            await self.store.delete(namespace, stale)
            done_entry = _Entry(document.sha256, self.recipe, document.ids)
            await asyncio.to_thread(manifest.put, namespace, document.source, done_entry)
            report(done, document.source)

        current = {d.source for d in documents} | {f.source for f in failed}
        removed = [source for source in entries if source not in current]
        for source in removed:
            await self.store.delete(namespace, entries[source].chunk_ids)
            await asyncio.to_thread(manifest.remove, namespace, source)
        return IngestReport(
            files_added=counts["added"],
            files_updated=counts["updated"],
            files_unchanged=counts["unchanged"],
            files_removed=len(removed),
            files_skipped=skipped,
            chunks_embedded=cache.misses,
            chunks_cached=cache.hits,
            chunks_total=sum(len(d.ids) for d in documents),
            failed=failed,
        )

    async def _records(
        self, embedder: Embedder, document: _Document, chunks: list[Chunk]
    ) -> list[VectorRecord]:
        vectors = await embedder.embed([c.text for c in chunks])
        return [
            VectorRecord(
                id=f"{document.source}#{chunk.index}",
                vector=vector,
                text=chunk.text,
                metadata=_metadata(document, chunk),
            )
            for chunk, vector in zip(chunks, vectors, strict=True)
        ]


def _metadata(document: _Document, chunk: Chunk) -> dict[str, MetadataValue]:
    """What a citation needs: source, heading, page, chunk number and character offsets."""
    metadata: dict[str, MetadataValue] = {
        "source": document.source,
        "heading": chunk.heading,
        "chunk": chunk.index,
        "start": chunk.start,
        "end": chunk.end,
        "doc_sha256": document.sha256,
    }
    if chunk.page is not None:
        metadata["page"] = chunk.page
    return metadata


def _empty_hint(skipped: int, failed: list[FileFailure]) -> str:
    hint = f"supported files: {', '.join(SUPPORTED_SUFFIXES)}; {skipped} other file(s) skipped"
    if failed:
        shown = "; ".join(f"{f.source}: {f.reason}" for f in failed[:3])
        more = f"; and {len(failed) - 3} more" if len(failed) > 3 else ""
        hint += f"; {len(failed)} file(s) could not be read: {shown}{more}"
    return hint
