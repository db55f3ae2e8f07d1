"""Incremental ingestion into a real SQLite + faiss store, with the hashing test embedder."""

from __future__ import annotations

from pathlib import Path

import pytest

from keel.errors import DocumentError, EmptyCorpusError
from keel.memory.ingest import DocumentIngestor, IngestProgress
from keel.memory.sqlite_store import SQLiteVectorStore
from keel.memory.testing import HashingEmbedder

NS = "docs"
VENUS = "# Venus\n\nVenus rotates backwards.\n\n## Day\n\nA day on Venus lasts 243 Earth days.\n"
MARS = "# Mars\n\nMars has two small moons named Phobos and Deimos.\n"
NOTES = "Plain notes about Saturn and its rings of ice.\n"


def write(root: Path, files: dict[str, str | bytes]) -> Path:
    """Writes ``files`` (relative path -> content) under ``root`` and returns ``root``."""
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return root


def ingestor(store: SQLiteVectorStore, embedder: HashingEmbedder, **sizes: int) -> DocumentIngestor:
    return DocumentIngestor(
        store,
        embedder,
        store.path,
        max_chars=sizes.get("max_chars", 200),
        overlap=sizes.get("overlap", 20),
    )


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return write(
        tmp_path / "corpus",
        {
            "venus.md": VENUS,
            "notes.txt": NOTES,
            "planets/mars.markdown": MARS,
            "image.png": b"\x89PNG\r\n",
            ".hidden.md": "# Hidden\n\nnever ingested",
            ".git/config.md": "# Git\n\nnever ingested",
        },
    )


async def sources(store: SQLiteVectorStore, embedder: HashingEmbedder) -> dict[str, int]:
    """Chunks per source in the namespace, found through the store itself."""
    hits = await store.query(NS, (await embedder.embed(["x"]))[0], k=1000)
    counts: dict[str, int] = {}
    for hit in hits:
        counts[str(hit.metadata["source"])] = counts.get(str(hit.metadata["source"]), 0) + 1
    return counts


async def test_first_ingest_stores_every_chunk_with_its_metadata(
    corpus: Path, hashing_store: SQLiteVectorStore, hashing: HashingEmbedder
) -> None:
    report = await ingestor(hashing_store, hashing).ingest(corpus, NS)

    assert (report.files_added, report.files_updated, report.files_unchanged) == (3, 0, 0)
    assert (report.files_removed, report.files_skipped) == (0, 1)
    assert report.chunks_embedded == report.chunks_total == 4
    assert await hashing_store.count(NS) == 4
    assert await sources(hashing_store, hashing) == {
        "venus.md": 2,
        "notes.txt": 1,
        "planets/mars.markdown": 1,
    }
    query = (await hashing.embed(["How long is a day on Venus?"]))[0]
    (hit,) = await hashing_store.query(NS, query, k=1, where={"source": "venus.md", "chunk": 1})
    assert hit.id == "venus.md#1"
    assert hit.text == "A day on Venus lasts 243 Earth days."
    assert hit.metadata["heading"] == "Venus > Day"
    assert len(str(hit.metadata["doc_sha256"])) == 64


async def test_unchanged_files_are_not_embedded_again(
    corpus: Path, hashing_store: SQLiteVectorStore, hashing: HashingEmbedder
) -> None:
    await ingestor(hashing_store, hashing).ingest(corpus, NS)
    embedded = hashing.texts_embedded

    report = await ingestor(hashing_store, hashing).ingest(corpus, NS)

    assert hashing.texts_embedded == embedded
    assert report.files_unchanged == 3
    assert report.chunks_embedded == 0
    assert report.chunks_total == 4
    assert await hashing_store.count(NS) == 4


async def test_only_the_changed_file_is_embedded_again(
    corpus: Path, hashing_store: SQLiteVectorStore, hashing: HashingEmbedder
) -> None:
    await ingestor(hashing_store, hashing).ingest(corpus, NS)
    hashing.calls.clear()
    (corpus / "venus.md").write_text("# Venus\n\nOnly one section now.\n", encoding="utf-8")

    report = await ingestor(hashing_store, hashing).ingest(corpus, NS)

    assert [text for call in hashing.calls for text in call] == ["Only one section now."]
    assert (report.files_updated, report.files_unchanged, report.chunks_embedded) == (1, 2, 1)
    assert await sources(hashing_store, hashing) == {
        "venus.md": 1,  # the old second chunk is gone
        "notes.txt": 1,
        "planets/mars.markdown": 1,
    }
    assert report.chunks_total == await hashing_store.count(NS) == 3


async def test_chunks_of_deleted_files_are_removed(
    corpus: Path, hashing_store: SQLiteVectorStore, hashing: HashingEmbedder
) -> None:
    await ingestor(hashing_store, hashing).ingest(corpus, NS)
    (corpus / "venus.md").unlink()
    write(corpus, {"planets/jupiter.md": "# Jupiter\n\nThe largest planet.\n"})

    report = await ingestor(hashing_store, hashing).ingest(corpus, NS)

    assert (report.files_added, report.files_removed, report.files_unchanged) == (1, 1, 2)
    assert await sources(hashing_store, hashing) == {
        "notes.txt": 1,
        "planets/jupiter.md": 1,
        "planets/mars.markdown": 1,
    }


async def test_a_single_file_is_its_own_source(
    corpus: Path, hashing_store: SQLiteVectorStore, hashing: HashingEmbedder
) -> None:
    report = await ingestor(hashing_store, hashing).ingest(corpus / "planets/mars.markdown", NS)
    assert (report.files_added, report.chunks_total) == (1, 1)
    assert await sources(hashing_store, hashing) == {"mars.markdown": 1}


async def test_progress_counts_files_and_chunks(
    corpus: Path, hashing_store: SQLiteVectorStore, hashing: HashingEmbedder
) -> None:
    events: list[IngestProgress] = []
    report = await ingestor(hashing_store, hashing).ingest(corpus, NS, events.append)

    assert {e.files_total for e in events} == {3}
    done = [e.files_done for e in events]
    assert done == sorted(done) and done[0] == 0 and done[-1] == 3
    embedded = [e.chunks_embedded for e in events]
    assert embedded == sorted(embedded) and embedded[-1] == report.chunks_embedded == 4


async def test_a_new_chunk_size_re_embeds_everything(
    corpus: Path, hashing_store: SQLiteVectorStore, hashing: HashingEmbedder
) -> None:
    await ingestor(hashing_store, hashing).ingest(corpus, NS)
    report = await ingestor(hashing_store, hashing, max_chars=20, overlap=0).ingest(corpus, NS)
    assert report.files_updated == 3
    assert report.chunks_total == await hashing_store.count(NS) > 4


async def test_a_missing_path_is_a_document_error(
    tmp_path: Path, hashing_store: SQLiteVectorStore, hashing: HashingEmbedder
) -> None:
    with pytest.raises(DocumentError, match="does not exist"):
        await ingestor(hashing_store, hashing).ingest(tmp_path / "nope", NS)


@pytest.mark.parametrize(
    "files",
    [{}, {"a.png": b"\x89PNG", "b.pdf": b"%PDF"}, {"a.md": "", "b.txt": "  \n\n"}],
    ids=["empty directory", "no supported files", "only empty files"],
)
async def test_no_text_is_an_empty_corpus(
    tmp_path: Path,
    hashing_store: SQLiteVectorStore,
    hashing: HashingEmbedder,
    files: dict[str, str | bytes],
) -> None:
    root = write(tmp_path / "corpus", files)
    root.mkdir(exist_ok=True)
    with pytest.raises(EmptyCorpusError):
        await ingestor(hashing_store, hashing).ingest(root, NS)
    assert await hashing_store.count(NS) == 0


async def test_a_file_that_is_not_utf8_is_reported_and_the_rest_ingested(
    corpus: Path, hashing_store: SQLiteVectorStore, hashing: HashingEmbedder
) -> None:
    await ingestor(hashing_store, hashing).ingest(corpus, NS)
    hashing.calls.clear()
    (corpus / "notes.txt").write_text("Changed notes.\n", encoding="utf-8")
    (corpus / "venus.md").unlink()
    write(corpus, {"latin1.md": "# Caf\xe9\n".encode("latin-1")})

    report = await ingestor(hashing_store, hashing).ingest(corpus, NS)

    assert [(f.source, f.reason) for f in report.failed] == [
        (
            "latin1.md",
            "not valid UTF-8 text (bad byte at offset 5) "
            "(convert it to UTF-8, e.g. iconv -f latin1 -t utf-8)",
        )
    ]
    assert report.files_failed == 1
    assert (report.files_updated, report.files_removed, report.files_added) == (1, 1, 0)
    assert [text for call in hashing.calls for text in call] == ["Changed notes."]
    assert await sources(hashing_store, hashing) == {"notes.txt": 1, "planets/mars.markdown": 1}


async def test_a_known_file_that_turns_bad_keeps_its_previous_chunks(
    corpus: Path, hashing_store: SQLiteVectorStore, hashing: HashingEmbedder
) -> None:
    await ingestor(hashing_store, hashing).ingest(corpus, NS)
    (corpus / "venus.md").write_bytes(b"\x00\x01\x02 binary garbage \xff" * 10)

    report = await ingestor(hashing_store, hashing).ingest(corpus, NS)

    assert [(f.source, f.reason) for f in report.failed] == [
        ("venus.md", "binary content (NUL bytes), not text")
    ]
    assert report.files_removed == 0
    assert (await sources(hashing_store, hashing))["venus.md"] == 2
    assert report.chunks_total == await hashing_store.count(NS) == 4


async def test_a_file_over_the_size_limit_is_skipped(
    corpus: Path, hashing_store: SQLiteVectorStore, hashing: HashingEmbedder
) -> None:
    write(corpus, {"huge.txt": "word " * 400})
    small = DocumentIngestor(
        hashing_store, hashing, hashing_store.path, max_chars=200, overlap=0, max_file_bytes=1000
    )
    report = await small.ingest(corpus, NS)
    assert [f.source for f in report.failed] == ["huge.txt"]
    assert "over the limit of 0.0 MB" in report.failed[0].reason
    assert report.files_added == 3


async def test_a_corpus_of_only_bad_files_is_an_empty_corpus_naming_them(
    tmp_path: Path, hashing_store: SQLiteVectorStore, hashing: HashingEmbedder
) -> None:
    root = write(
        tmp_path / "bad", {"a.md": b"\xff\xfe\x00 not utf-8 \x81", "b.pdf": b"%PDF-1.4 junk"}
    )
    with pytest.raises(EmptyCorpusError) as raised:
        await ingestor(hashing_store, hashing).ingest(root, NS)
    message = str(raised.value)
    assert "2 file(s) could not be read" in message
    assert "a.md: not valid UTF-16" in message
    assert "b.pdf: not a readable PDF" in message
    assert hashing.calls == []


async def test_unchanged_chunks_of_a_changed_file_are_not_embedded_again(
    tmp_path: Path, hashing_store: SQLiteVectorStore, hashing: HashingEmbedder
) -> None:
    root = write(tmp_path / "docs", {"a.md": "# One\n\nFirst part.\n\n# Two\n\nSecond part.\n"})
    await ingestor(hashing_store, hashing).ingest(root, NS)
    hashing.calls.clear()
    write(root, {"a.md": "# Zero\n\nNew part.\n\n# One\n\nFirst part.\n\n# Two\n\nSecond part.\n"})

    report = await ingestor(hashing_store, hashing).ingest(root, NS)

    assert hashing.calls == [["New part."]]
    assert (report.files_updated, report.chunks_embedded, report.chunks_cached) == (1, 1, 2)
    hits = await hashing_store.query(NS, (await hashing.embed(["First part"]))[0], k=3)
    assert {h.id: h.metadata["heading"] for h in hits} == {
        "a.md#0": "Zero",
        "a.md#1": "One",
        "a.md#2": "Two",
    }


async def test_chunks_carry_offsets_into_the_document(
    corpus: Path, hashing_store: SQLiteVectorStore, hashing: HashingEmbedder
) -> None:
    await ingestor(hashing_store, hashing).ingest(corpus, NS)
    hits = await hashing_store.query(NS, (await hashing.embed(["Venus"]))[0], k=10)
    for hit in hits:
        text = (corpus / str(hit.metadata["source"])).read_text(encoding="utf-8")
        assert text[int(hit.metadata["start"]) : int(hit.metadata["end"])] == hit.text


async def test_an_interrupted_update_leaves_no_orphans(
    corpus: Path,
    hashing_store: SQLiteVectorStore,
    hashing: HashingEmbedder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    venus = corpus / "venus.md"
    venus.write_text("# Venus\n\nOne section.\n", encoding="utf-8")
    await ingestor(hashing_store, hashing).ingest(corpus, NS)
    venus.write_text("# A\n\none\n\n# B\n\ntwo\n\n# C\n\nthree\n", encoding="utf-8")

    async def crash(namespace: str, ids: object) -> None:
        raise RuntimeError("killed after the new chunks were stored")

    monkeypatch.setattr(hashing_store, "delete", crash)
    with pytest.raises(RuntimeError):
        await ingestor(hashing_store, hashing).ingest(corpus, NS)
    monkeypatch.undo()
    assert (await sources(hashing_store, hashing))["venus.md"] == 3

    venus.write_text("# Venus\n\nBack to one section.\n", encoding="utf-8")
    report = await ingestor(hashing_store, hashing).ingest(corpus, NS)
    assert report.files_updated == 1
    assert (await sources(hashing_store, hashing))["venus.md"] == 1  # venus.md#1, #2 removed
    assert report.chunks_total == await hashing_store.count(NS)


async def test_a_store_emptied_behind_the_manifest_is_refilled(
    corpus: Path, tmp_path: Path, hashing: HashingEmbedder
) -> None:
    manifest = tmp_path / "manifest.db"
    first = SQLiteVectorStore(tmp_path / "first.db", hashing.dimension)
    await DocumentIngestor(first, hashing, manifest, max_chars=200, overlap=0).ingest(corpus, NS)
    await first.close()

    second = SQLiteVectorStore(tmp_path / "second.db", hashing.dimension)
    report = await DocumentIngestor(second, hashing, manifest, max_chars=200, overlap=0).ingest(
        corpus, NS
    )
    # Every vector comes from the embedding cache: the text was embedded for the first store.
    assert (report.files_added, report.chunks_embedded, report.chunks_cached) == (3, 0, 4)
    assert await second.count(NS) == 4
    await second.close()


async def test_namespaces_have_separate_manifests(
    corpus: Path, hashing_store: SQLiteVectorStore, hashing: HashingEmbedder
) -> None:
    await ingestor(hashing_store, hashing).ingest(corpus, "one")
    report = await ingestor(hashing_store, hashing).ingest(corpus / "venus.md", "two")
    assert (report.files_added, report.files_removed) == (1, 0)
    assert await hashing_store.count("one") == 4
    assert await hashing_store.count("two") == 2
