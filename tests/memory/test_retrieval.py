"""Retrieval end to end: real files, real store, the real embedding model; and its span."""

from __future__ import annotations

from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from keel.memory import retrieval
from keel.memory.base import Embedder
from keel.memory.ingest import DocumentIngestor
from keel.memory.onnx_embedder import MiniLMEmbedder
from keel.memory.retrieval import Retriever
from keel.memory.sqlite_store import SQLiteVectorStore
from keel.memory.testing import HashingEmbedder

DOCS = {
    "venus.md": "# Venus\n\n## Rotation\n\nVenus spins backwards and very slowly: one rotation "
    "takes 243 Earth days, longer than its year of 225 days.\n",
    "bread.md": "# Baking bread\n\nMix flour, water, salt and yeast, knead the dough for ten "
    "minutes, let it rise for an hour, then bake it in a hot oven.\n",
    "python.txt": "Python lists are mutable sequences. Append items with list.append and sort "
    "them in place with list.sort.\n",
    "football.md": "# Football\n\nA match lasts ninety minutes, played by two teams of eleven "
    "players who try to score goals.\n",
}
NS = "tiny"


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> InMemorySpanExporter:
    """Collects the spans of keel.memory.retrieval through a private provider.

    The global tracer provider is left alone: it can be set only once per process.
    """
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(retrieval, "_tracer", provider.get_tracer("keel.memory"))
    return exporter


async def ingested(tmp_path: Path, embedder: Embedder) -> SQLiteVectorStore:
    root = tmp_path / "docs"
    root.mkdir()
    for name, text in DOCS.items():
        (root / name).write_text(text, encoding="utf-8")
    store = SQLiteVectorStore(tmp_path / "memory.db", embedder.dimension)
    ingestor = DocumentIngestor(store, embedder, store.path, max_chars=500, overlap=50)
    await ingestor.ingest(root, NS)
    return store


@pytest.mark.slow
@pytest.mark.parametrize(
    ("question", "source"),
    [
        ("How long is a day on Venus?", "venus.md"),
        ("How do I make a loaf at home?", "bread.md"),
        ("How can I order the elements of an array?", "python.txt"),
        ("How many people are on a soccer team?", "football.md"),
    ],
)
async def test_the_relevant_document_comes_first(
    tmp_path: Path, minilm: MiniLMEmbedder, question: str, source: str
) -> None:
    store = await ingested(tmp_path, minilm)
    hits = await Retriever(store, minilm).retrieve(question, NS, k=4)
    assert len(hits) == 4
    assert hits[0].metadata["source"] == source
    assert hits[0].score > hits[1].score
    await store.close()


@pytest.mark.slow
async def test_demo_documents_answer_a_question_about_venus(
    tmp_path: Path, minilm: MiniLMEmbedder
) -> None:
    corpus = Path(__file__).parents[2] / "src" / "keel" / "demo" / "corpus"
    root = tmp_path / "planets"
    root.mkdir()
    for path in sorted(corpus.glob("0[1-4]-*.md")):  # the Sun, Mercury, Venus, Earth
        (root / path.name).write_bytes(path.read_bytes())
    store = SQLiteVectorStore(tmp_path / "memory.db", minilm.dimension)
    ingestor = DocumentIngestor(store, minilm, store.path, max_chars=1000, overlap=100)
    report = await ingestor.ingest(root, NS)
    assert report.files_added == 4
    hits = await Retriever(store, minilm).retrieve("Why does Venus rotate backwards?", NS, k=4)
    assert hits[0].metadata["source"] == "03-venus.md"
    assert "rotation" in str(hits[0].metadata["heading"]).lower()
    await store.close()


async def test_retrieval_emits_a_genai_span(tmp_path: Path, spans: InMemorySpanExporter) -> None:
    embedder = HashingEmbedder(dimension=64)
    store = await ingested(tmp_path, embedder)
    hits = await Retriever(store, embedder).retrieve("a day on Venus", NS, k=2)

    (span,) = [s for s in spans.get_finished_spans() if s.name == f"retrieval {NS}"]
    attributes = dict(span.attributes or {})
    assert attributes["gen_ai.operation.name"] == "retrieval"
    assert attributes["gen_ai.request.model"] == embedder.name
    assert attributes["keel.retrieval.k"] == 2
    assert attributes["keel.retrieval.hits"] == len(hits) == 2
    assert attributes["keel.retrieval.top_score"] == pytest.approx(hits[0].score)
    await store.close()


async def test_an_empty_query_is_refused(tmp_path: Path) -> None:
    embedder = HashingEmbedder(dimension=64)
    store = SQLiteVectorStore(tmp_path / "memory.db", embedder.dimension)
    with pytest.raises(ValueError, match="empty"):
        await Retriever(store, embedder).retrieve("  ", NS, k=2)
    with pytest.raises(ValueError):
        await Retriever(store, embedder).retrieve("q", NS, k=0)
    assert await Retriever(store, embedder).retrieve("q", "empty-namespace", k=3) == []
    await store.close()
