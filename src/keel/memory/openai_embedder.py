"""An ``Embedder`` for any OpenAI-compatible ``/v1/embeddings`` endpoint, on the official SDK.

Where to send requests (base URL, the environment variable holding the key, headers, timeout)
is a ``keel.llm.provider.Provider``, exactly as for chat models, so the same class serves OpenAI,
vLLM, TEI, Ollama, llama-server or LiteLLM. Texts go in batches of ``batch_size``; vectors are
asked for as plain floats (``encoding_format="float"``, which every compatible server speaks),
checked (one per text, all of one length, finite) and L2-normalised. The SDK's own retries are
off, as for chat models: HTTP and transport failures become Keel's typed model errors
(``RateLimitError``, ``ModelUnavailableError``, ``ModelRequestError``) with the key redacted.

This embedder is never a silent default: Keel embeds locally (MiniLM) unless configuration names
a hosted model. Wrap it in ``CachedEmbedder`` so re-ingesting never pays twice for a text.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from keel.errors import (
    ConfigError,
    EmbeddingDimensionError,
    MissingDependencyError,
    ModelUnavailableError,
)
from keel.llm.provider import Provider, openai_provider
from keel.memory.base import Embedder

try:
    import openai
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError("openai", "openai", feature="Hosted embeddings") from e

from keel.llm.sdk_errors import map_sdk_error

__all__ = ["KNOWN_DIMENSIONS", "OpenAIEmbedder", "parse_embeddings"]

KNOWN_DIMENSIONS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}
"""Vector lengths of OpenAI's models, so they need no dimension setting and no probe request."""


def parse_embeddings(body: Any, count: int, where: str) -> list[list[float]]:
    """The vectors of an ``/embeddings`` reply body, in input order, unit-normalised.

    Raises ``ModelUnavailableError`` when the body is not a well-formed reply for ``count``
    inputs (missing or extra items, non-numeric or non-finite values, vectors of unequal length).
    """

    def malformed(why: str) -> ModelUnavailableError:
        return ModelUnavailableError(f"{where} sent a malformed embeddings reply: {why}")

    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        raise malformed("no 'data' list")
    if len(data) != count:
        raise malformed(f"{len(data)} embeddings for {count} inputs")
    vectors: list[list[float] | None] = [None] * count
    for position, item in enumerate(data):
        if not isinstance(item, dict) or not isinstance(item.get("embedding"), list):
            raise malformed(f"item {position} has no 'embedding' list")
        index = item.get("index", position)
        if not isinstance(index, int) or not 0 <= index < count or vectors[index] is not None:
            raise malformed(f"item {position} has a bad or repeated index {index!r}")
        raw = item["embedding"]
        if not raw or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in raw):
            raise malformed(f"embedding {index} is not a list of numbers")
        norm = math.sqrt(math.fsum(float(x) * float(x) for x in raw))
        if not norm > 0 or not math.isfinite(norm):
            raise malformed(f"embedding {index} is zero or not finite")
        vectors[index] = [float(x) / norm for x in raw]
    lengths = {len(v) for v in vectors if v is not None}
    if len(lengths) != 1:
        raise malformed(f"embeddings of different lengths {sorted(lengths)}")
    return [v for v in vectors if v is not None]


class OpenAIEmbedder(Embedder):
    """Embeddings from ``model`` at ``provider`` (default: OpenAI's API, key ``OPENAI_API_KEY``).

    ``dimension`` is the expected vector length: every reply is checked against it. Left unset,
    it comes from ``KNOWN_DIMENSIONS``, else from the first reply (``discover_dimension()`` asks
    for it up front). ``client`` may be handed in (an ``openai.AsyncOpenAI``).
    """

    def __init__(
        self,
        model: str,
        provider: Provider | None = None,
        *,
        dimension: int | None = None,
        batch_size: int = 64,
        client: openai.AsyncOpenAI | None = None,
    ) -> None:
        if not model:
            raise ConfigError("an embedding model needs a name", hint="e.g. 'openai:MODEL'")
        if dimension is not None and dimension < 1:
            raise ValueError("dimension must be >= 1")
        if not 1 <= batch_size <= 2048:
            raise ValueError("batch_size must be between 1 and 2048 (OpenAI's limit per request)")
        self.model = model
        self.provider = provider or openai_provider()
        self.batch_size = batch_size
        self.requests = 0
        self.input_tokens = 0
        self._configured = dimension
        self._discovered: int | None = None
        self._client = client or openai.AsyncOpenAI(**self._client_options())

    def __repr__(self) -> str:
        return f"OpenAIEmbedder({self.model!r}, provider={self.provider.name!r})"

    @property
    def name(self) -> str:
        return self.model

    @property
    def where(self) -> str:
        """The endpoint, for messages: the provider's name and base URL (never the key)."""
        return f"{self.provider.name} ({self.provider.base_url or 'api.openai.com'})"

    @property
    def dimension(self) -> int:
        known = self._known_dimension()
        if known is None:
            raise ConfigError(
                f"the dimension of embedding model {self.model!r} is not known yet",
                hint="set embeddings.dimension, or await discover_dimension() first",
            )
        return known

    def _known_dimension(self) -> int | None:
        return self._configured or KNOWN_DIMENSIONS.get(self.model) or self._discovered

    async def discover_dimension(self) -> int:
        """The vector length, asking the endpoint (one short request) if it is not known."""
        known = self._known_dimension()
        if known is not None:
            return known
        await self.embed(["dimension probe"])
        assert self._discovered is not None
        return self._discovered

    def discover_dimension_sync(self) -> int:
        """Blocking ``discover_dimension`` for synchronous wiring code (``keel.stack``): one
        request through the SDK's synchronous client, which is then closed."""
        known = self._known_dimension()
        if known is not None:
            return known
        with openai.OpenAI(**self._client_options()) as client:
            try:
                raw = client.embeddings.with_raw_response.create(
                    model=self.model, input=["dimension probe"], encoding_format="float"
                )
                body = json.loads(raw.content)
            except Exception as e:
                raise self._mapped(e) from e
        return len(self._accept(parse_embeddings(body, 1, self.where))[0])

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of texts, not a single string")
        vectors: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            vectors.extend(await self._embed_batch(list(texts[start : start + self.batch_size])))
        return vectors

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.close()

    async def _embed_batch(self, batch: list[str]) -> list[list[float]]:
        try:
            raw = await self._client.embeddings.with_raw_response.create(
                model=self.model, input=batch, encoding_format="float"
            )
            body = json.loads(raw.content)
        except Exception as e:
            raise self._mapped(e) from e
        self.requests += 1
        usage = body.get("usage") if isinstance(body, dict) else None
        if isinstance(usage, dict) and isinstance(usage.get("prompt_tokens"), int):
            self.input_tokens += usage["prompt_tokens"]
        return self._accept(parse_embeddings(body, len(batch), self.where))

    def _accept(self, vectors: list[list[float]]) -> list[list[float]]:
        """Check the vectors' length against the expected one (or learn it from them)."""
        length = len(vectors[0])
        expected = self._known_dimension()
        if expected is None:
            self._discovered = length
        elif length != expected:
            raise EmbeddingDimensionError(
                f"embedding model {self.model!r} at {self.where} returned vectors of "
                f"dimension {length}, expected {expected}",
                hint="set embeddings.dimension to the model's real dimension, or use the model "
                "the memory store was built with",
            )
        return vectors

    def _mapped(self, error: Exception) -> Exception:
        if isinstance(error, json.JSONDecodeError | UnicodeDecodeError):
            return ModelUnavailableError(f"{self.where} sent an embeddings reply that is not JSON")
        return map_sdk_error(error, self.provider, openai)

    def _client_options(self) -> dict[str, Any]:
        return {
            "api_key": self.provider.require_api_key() or "EMPTY",
            "base_url": self.provider.base_url,
            "default_headers": dict(self.provider.headers) or None,
            "timeout": self.provider.timeout,
            "max_retries": 0,
        }
