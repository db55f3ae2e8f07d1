"""Incremental document ingestion: load, chunk, embed and store, skipping what has not changed.

A manifest table (``documents``) records, per namespace and source file, the sha256 of its
content and the ids of its chunks. Every file is read and checked before anything is written, so
a bad file aborts a run without losing what was ingested before; and a file's manifest row lists
every chunk id it may have in the store before those chunks are written, so a run interrupted at
any point is completed, not orphaned, by the next one.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from keel.errors import DocumentError, EmptyCorpusError, StoreError
from keel.memory.base import Embedder, VectorRecord, VectorStore
from keel.memory.chunking import Chunk, chunk_markdown, chunk_text

__all__ = ["SUPPORTED_SUFFIXES", "DocumentIngestor", "IngestProgress", "IngestReport"]

_CHUNKERS: dict[str, Callable[..., list[Chunk]]] = {
    ".md": chunk_markdown,
    ".markdown": chunk_markdown,
    ".txt": chunk_text,
}
SUPPORTED_SUFFIXES = tuple(_CHUNKERS)
EMBED_GROUP = 64
"""Chunks embedded and stored per step, so progress moves within a long file."""


class IngestProgress(BaseModel):
    """Where an ingest run is: enough to draw a progress bar."""

    model_config = ConfigDict(frozen=True)

    files_done: int
    files_total: int
    chunks_embedded: int
    source: str


class IngestReport(BaseModel):
    """What an ingest run did, file by file and chunk by chunk."""

    model_config = ConfigDict(frozen=True)

    files_added: int = 0
    files_updated: int = 0
    files_unchanged: int = 0
    files_removed: int = 0
    files_skipped: int = 0
    chunks_embedded: int = 0
    chunks_total: int = 0


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


def _scan(root: Path) -> tuple[list[tuple[str, Path]], int]:
    """Supported files under ``root`` as (source, path), sorted, and how many were skipped."""
    if not root.exists():
        raise DocumentError(f"document path does not exist: {root}")
    if root.is_file():
        supported = root.suffix.lower() in _CHUNKERS
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
            if path.suffix.lower() in _CHUNKERS:
                files.append((path.relative_to(root).as_posix(), path))
            else:
                skipped += 1
    return sorted(files), skipped


class DocumentIngestor:
    """Ingests Markdown and text files into one namespace of a vector store, incrementally."""

    def __init__(
        self,
        store: VectorStore,
        embedder: Embedder,
        manifest_path: Path,
        *,
        max_chars: int,
        overlap: int,
    ) -> None:
        if max_chars < 1 or not 0 <= overlap < max_chars:
            raise ValueError("need max_chars >= 1 and 0 <= overlap < max_chars")
        self.store = store
        self.embedder = embedder
        self.manifest_path = Path(manifest_path)
        self.max_chars = max_chars
        self.overlap = overlap
        # A change of model or chunking makes every stored chunk out of date.
        self.recipe = f"{embedder.name}|{max_chars}|{overlap}"

    async def ingest(
        self,
        path: Path,
        namespace: str,
        progress: Callable[[IngestProgress], None] | None = None,
    ) -> IngestReport:
        """Bring ``namespace`` in line with the files at ``path`` (a file or a directory).

        Raises ``DocumentError`` for a missing path or a file that cannot be read as UTF-8, and
        ``EmptyCorpusError`` when there is no text to ingest; in both cases nothing is changed.
        """
        root = Path(path)
        files, skipped = await asyncio.to_thread(_scan, root)
        manifest = await asyncio.to_thread(_Manifest, self.manifest_path)
        try:
            entries = await asyncio.to_thread(manifest.load, namespace)
            if entries and await self.store.count(namespace) == 0:
                # The store was emptied behind the manifest's back: start afresh.
                await asyncio.to_thread(manifest.clear, namespace)
                entries = {}
            documents = await asyncio.to_thread(self._read_all, files, entries)
            chunks_total = sum(len(d.ids) for d in documents)
            if chunks_total == 0:
                raise EmptyCorpusError(
                    f"no text to ingest at {root}",
                    hint=f"supported files: {', '.join(SUPPORTED_SUFFIXES)}; "
                    f"{skipped} other file(s) skipped",
                )
            return await self._apply(namespace, manifest, entries, documents, skipped, progress)
        finally:
            manifest.close()

    def _read_all(
        self, files: list[tuple[str, Path]], entries: dict[str, _Entry]
    ) -> list[_Document]:
        """Reads, hashes and (if changed) chunks every file, before anything is written."""
        documents = []
        for source, path in files:
            try:
                data = path.read_bytes()
            except OSError as e:
                raise DocumentError(f"cannot read {path}: {e.strerror}") from e
            digest = hashlib.sha256(data).hexdigest()
            entry = entries.get(source)
            document = _Document(source, digest, known=entry is not None)
            if entry is not None and entry.sha256 == digest and entry.recipe == self.recipe:
                document.ids = entry.chunk_ids
            else:
                try:
                    text = data.decode("utf-8-sig")
                except UnicodeDecodeError as e:
                    raise DocumentError(
                        f"{path} is not valid UTF-8 text (bad byte at offset {e.start})"
                    ) from e
                chunker = _CHUNKERS[path.suffix.lower()]
                document.chunks = chunker(text, max_chars=self.max_chars, overlap=self.overlap)
                document.ids = [f"{source}#{c.index}" for c in document.chunks]
            documents.append(document)
        return documents

    async def _apply(
        self,
        namespace: str,
        manifest: _Manifest,
        entries: dict[str, _Entry],
        documents: list[_Document],
        skipped: int,
        progress: Callable[[IngestProgress], None] | None,
    ) -> IngestReport:
        counts = dict.fromkeys(("added", "updated", "unchanged"), 0)
        embedded = 0

        def report(done: int, source: str) -> None:
            if progress is not None:
                progress(
                    IngestProgress(
                        files_done=done,
                        files_total=len(documents),
                        chunks_embedded=embedded,
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
                await self.store.upsert(namespace, await self._records(document, group))
                embedded += len(group)
                report(done - 1, document.source)
            fresh = set(document.ids)
            stale = [i for i in old if i not in fresh]
            await self.store.delete(namespace, stale)
            done_entry = _Entry(document.sha256, self.recipe, document.ids)
            await asyncio.to_thread(manifest.put, namespace, document.source, done_entry)
            report(done, document.source)

        current = {d.source for d in documents}
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
            chunks_embedded=embedded,
            chunks_total=sum(len(d.ids) for d in documents),
        )

    async def _records(self, document: _Document, chunks: list[Chunk]) -> list[VectorRecord]:
        vectors = await self.embedder.embed([c.text for c in chunks])
        if len(vectors) != len(chunks):
            raise StoreError(
                f"embedder {self.embedder.name} returned {len(vectors)} vectors "
                f"for {len(chunks)} texts"
            )
        return [
            VectorRecord(
                id=f"{document.source}#{chunk.index}",
                vector=vector,
                text=chunk.text,
                metadata={
                    "source": document.source,
                    "heading": chunk.heading,
                    "chunk": chunk.index,
                    "doc_sha256": document.sha256,
                },
            )
            for chunk, vector in zip(chunks, vectors, strict=True)
        ]
