"""Public test double: ``HashingEmbedder``, a real but tiny bag-of-words embedder.

It needs no model and is deterministic, so tests of ingestion and stores run in milliseconds;
texts that share words get similar vectors, so retrieval through it still behaves sensibly. It
records every call, so a test can assert what was (or was not) embedded.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence

from keel.memory.base import Embedder

__all__ = ["HashingEmbedder"]

_WORD = re.compile(r"\w+")


class HashingEmbedder(Embedder):
    """Hashes each lower-cased word to a signed slot of the vector, then L2-normalises.

    A text without words maps to a fixed unit vector, so every output is unit length.
    """

    def __init__(self, dimension: int = 256) -> None:
        if dimension < 2:
            raise ValueError("dimension must be >= 2")
        self._dimension = dimension
        self.calls: list[list[str]] = []

    @property
    def name(self) -> str:
        return f"hashing-bow-{self._dimension}"

    @property
    def dimension(self) -> int:
        return self._dimension

    @property
    def texts_embedded(self) -> int:
        """How many texts all calls so far embedded."""
        return sum(len(call) for call in self.calls)

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of texts, not a single string")
        self.calls.append(list(texts))
        return [self._vector(text) for text in texts]

    def _vector(self, text: str) -> list[float]:
        vector = [0.0] * self._dimension
        for word in _WORD.findall(text.lower()):
            h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "big")
            vector[h % self._dimension] += 1.0 if h >> 63 else -1.0
        norm = math.sqrt(sum(v * v for v in vector))
        if norm == 0.0:
            return [1.0 / math.sqrt(self._dimension)] * self._dimension
        return [v / norm for v in vector]
