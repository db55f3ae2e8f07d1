"""The memory layer: embedders, vector stores, loaders, chunking, incremental ingestion, retrieval,
episodic memory (runs) and procedural memory (skills).

Importing this package is cheap: backends that need numpy, onnxruntime, usearch, pypdf or
python-docx are imported only when something builds or uses one.
"""

from keel.memory.base import (
    Embedder,
    Hit,
    KeywordSearch,
    MetadataValue,
    Reranker,
    TokenCounting,
    VectorRecord,
    VectorStore,
)
from keel.memory.cache import CachedEmbedder
from keel.memory.chunking import (
    Chunk,
    LoadedDocument,
    Section,
    chunk_document,
    chunk_markdown,
    chunk_text,
)
from keel.memory.episodic import (
    EpisodicStore,
    RetentionPolicy,
    RunQuery,
    RunRecord,
    RunUsage,
    StepRecord,
    ToolCallRecord,
)
from keel.memory.episodic_sqlite import SQLiteEpisodicStore
from keel.memory.factory import (
    EMBEDDERS,
    create_embedder,
    create_episodic_store,
    create_vector_store,
)
from keel.memory.ingest import (
    SUPPORTED_SUFFIXES,
    DocumentIngestor,
    FileFailure,
    IngestProgress,
    IngestReport,
)
from keel.memory.loaders import LOADERS, Loader
from keel.memory.retrieval import (
    EmbeddingReranker,
    RetrievalMode,
    Retriever,
    reciprocal_rank_fusion,
)
from keel.memory.skills import Skill, SkillExample, SkillSpec, SkillStore, SQLiteSkillStore

__all__ = [
    "CachedEmbedder",
    "Chunk",
    "DocumentIngestor",
    "EMBEDDERS",
    "Embedder",
    "EmbeddingReranker",
    "EpisodicStore",
    "FileFailure",
    "Hit",
    "IngestProgress",
    "IngestReport",
    "KeywordSearch",
    "LOADERS",
    "LoadedDocument",
    "Loader",
    "MetadataValue",
    "Reranker",
    "RetentionPolicy",
    "RetrievalMode",
    "Retriever",
    "RunQuery",
    "RunRecord",
    "RunUsage",
    "SQLiteEpisodicStore",
    "SQLiteSkillStore",
    "SUPPORTED_SUFFIXES",
    "Section",
    "Skill",
    "SkillExample",
    "SkillSpec",
    "SkillStore",
    "StepRecord",
    "TokenCounting",
    "ToolCallRecord",
    "VectorRecord",
    "VectorStore",
    "chunk_document",
    "chunk_markdown",
    "chunk_text",
    "create_embedder",
    "create_episodic_store",
    "create_vector_store",
    "reciprocal_rank_fusion",
]
