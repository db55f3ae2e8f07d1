"""The memory layer: embedders, vector stores, chunking, incremental ingestion and retrieval.

Importing this package is cheap: backends that need numpy, onnxruntime or faiss are imported only
when ``create_embedder`` or ``create_vector_store`` builds one.
"""

from keel.memory.base import Embedder, Hit, MetadataValue, VectorRecord, VectorStore
from keel.memory.chunking import Chunk, chunk_markdown, chunk_text
from keel.memory.factory import EMBEDDERS, create_embedder, create_vector_store
from keel.memory.ingest import SUPPORTED_SUFFIXES, DocumentIngestor, IngestProgress, IngestReport
from keel.memory.retrieval import Retriever

__all__ = [
    "Chunk",
    "DocumentIngestor",
    "EMBEDDERS",
    "Embedder",
    "Hit",
    "IngestProgress",
    "IngestReport",
    "MetadataValue",
    "Retriever",
    "SUPPORTED_SUFFIXES",
    "VectorRecord",
    "VectorStore",
    "chunk_markdown",
    "chunk_text",
    "create_embedder",
    "create_vector_store",
]
