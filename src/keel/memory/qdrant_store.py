"""A ``VectorStore`` on Qdrant through ``qdrant-client``: a Qdrant server, or its local mode.

Namespaces are a payload field of one collection, not a collection each: Qdrant's own guidance for
many tenants, because every collection costs the server its own segments and HNSW graph, while a
``namespace`` keyword index marked ``is_tenant`` keeps each tenant's points together and lets the
filtered HNSW search stay inside them. Every query, count and delete carries the namespace
condition, so no operation crosses namespaces; point ids are UUIDv5 of (namespace, id), so the
same id in two namespaces is two points. The caller's id is kept in the payload.

Metadata filters match like the SQLite store (``1`` equals ``1.0``, a bool never equals a number,
any key is allowed, dots included): each record's metadata is also stored as a list of typed
``key=value`` tokens, and a filter requires every wanted token. Qdrant's own ``MatchValue`` cannot
do this (it has no float match, and a dotted key is a nested path).

Local mode (``path=`` or ``location=":memory:"``) is an in-process, brute-force (exact) engine for
tests and small data: it warns above 20,000 points and was measured at ~3 queries/s on 100,000.
No Qdrant server runs on Keel's build machines; the server path uses the same client calls.
No keyword search: ``Retriever`` refuses ``mode="hybrid"``/``"keyword"`` on this store with a
``ConfigError``, and ``keel memory search`` falls back to vector search.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import uuid
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from keel.errors import ConfigError, MissingDependencyError, StoreError
from keel.memory.base import Hit, MetadataValue, VectorRecord, VectorStore

try:
    from qdrant_client import AsyncQdrantClient, models
    from qdrant_client.http.exceptions import ApiException
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError(
        "qdrant-client", "qdrant", feature="The Qdrant vector store"
    ) from e

__all__ = ["QdrantVectorStore", "filter_tokens", "point_id"]

_ID_NAMESPACE = uuid.UUID("6f1c3a52-5d0e-4b8e-9a43-2f7e6b1d0c11")
_MATCH = "keel_match"
_BATCH = 256


def point_id(namespace: str, record_id: str) -> str:
    """The Qdrant point id of ``record_id`` in ``namespace``: a deterministic UUIDv5."""
    return str(uuid.uuid5(_ID_NAMESPACE, json.dumps([namespace, record_id])))


def _token(key: str, value: MetadataValue) -> str:
    if isinstance(value, bool):
        tagged = "b:" + ("true" if value else "false")
    elif isinstance(value, int):
        tagged = f"n:{value}"
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise StoreError(f"metadata {key!r} is not a finite number")
        tagged = f"n:{int(value)}" if value.is_integer() else f"n:{value!r}"
    else:
        tagged = f"s:{value}"
    return json.dumps([key, tagged])


def filter_tokens(metadata: Mapping[str, MetadataValue]) -> list[str]:
    """One token per metadata item; equal tokens exactly when the values compare equal."""
    return [_token(key, value) for key, value in metadata.items()]


class QdrantVectorStore(VectorStore):
    """Vectors in one Qdrant collection (created on first use, cosine distance).

    Give exactly one of ``path`` (local mode on disk), ``location=":memory:"`` (local mode in
    memory), ``url`` (a Qdrant server; its API key is read from the environment variable
    ``api_key_env`` if set) or ``client`` (an ``AsyncQdrantClient`` you own and close).
    """

    def __init__(
        self,
        dimension: int,
        *,
        path: Path | str | None = None,
        location: str | None = None,
        url: str | None = None,
        api_key_env: str | None = None,
        client: AsyncQdrantClient | None = None,
        collection: str = "keel_memory",
        timeout: float = 30.0,
    ) -> None:
        if dimension < 1:
            raise ValueError("dimension must be >= 1")
        given = [name for name, v in (("path", path), ("location", location), ("url", url),
                 ("client", client)) if v is not None]  # fmt: skip
        if len(given) != 1:
            raise ConfigError(
                "a Qdrant store needs exactly one of path, location, url or client",
                hint=f"got: {', '.join(given) or 'none'}",
            )
        self.dimension = dimension
        self.collection = collection
        self.local = client is None and url is None
        self._owns_client = client is None
        if path is not None:
            self.where = f"Qdrant local mode at {path}"
        elif location is not None:
            self.where = f"Qdrant local mode ({location})"
        elif url is not None:
            self.where = f"Qdrant server {url}"
        else:
            self.where = "Qdrant (client given)"
        if client is None:
            api_key = os.environ.get(api_key_env) if api_key_env else None
            try:
                client = AsyncQdrantClient(
                    path=str(path) if path is not None else None,
                    location=location,
                    url=url,
                    api_key=api_key or None,
                    timeout=round(timeout),
                )
            except (RuntimeError, OSError, ValueError) as e:
                raise StoreError(
                    f"cannot open {self.where}: {e}",
                    hint="local mode allows one client per folder; use a Qdrant server to share",
                ) from None
        self._client: AsyncQdrantClient = client
        self._ready = False
        self._ready_lock: asyncio.Lock | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"QdrantVectorStore({self.where!r}, {self.dimension}, {self.collection!r})"

    # -- the protocol -------------------------------------------------------------------------

    async def upsert(self, namespace: str, records: Sequence[VectorRecord]) -> None:
        if not records:
            return
        latest = {record.id: record for record in records}  # the last of duplicate ids wins
        points = []
        for r in latest.values():
            vector = self._unit(r.vector, f"record {r.id!r}")
            payload: dict[str, Any] = {
                "namespace": namespace,
                "id": r.id,
                "text": r.text,
                "metadata": dict(r.metadata),
                _MATCH: filter_tokens(r.metadata),
            }
            points.append(
                models.PointStruct(id=point_id(namespace, r.id), vector=vector, payload=payload)
            )
        await self._ensure()
        for start in range(0, len(points), _BATCH):
            await self._call(
                "write",
                self._client.upsert(
                    self.collection, points=points[start : start + _BATCH], wait=True
                ),
            )

    async def delete(self, namespace: str, ids: Sequence[str]) -> None:
        if not ids:
            return
        await self._ensure()
        selector = models.PointIdsList(points=[point_id(namespace, i) for i in dict.fromkeys(ids)])
        await self._call(
            "delete", self._client.delete(self.collection, points_selector=selector, wait=True)
        )

    async def query(
        self,
        namespace: str,
        vector: Sequence[float],
        k: int,
        where: Mapping[str, MetadataValue] | None = None,
    ) -> list[Hit]:
        if k < 1:
            raise ValueError("k must be >= 1")
        unit = self._unit(vector, "the query")
        await self._ensure()
        response = await self._call(
            "search",
            self._client.query_points(
                self.collection,
                query=unit,
                limit=k,
                query_filter=self._filter(namespace, where),
                with_payload=True,
            ),
        )
        hits = []
        for point in response.points:
            payload = point.payload or {}
            hits.append(
                Hit(
                    id=str(payload["id"]),
                    score=float(point.score),
                    text=str(payload.get("text", "")),
                    metadata=dict(payload.get("metadata") or {}),
                )
            )
        return hits

    async def count(self, namespace: str) -> int:
        await self._ensure()
        result = await self._call(
            "count",
            self._client.count(
                self.collection, count_filter=self._filter(namespace, None), exact=True
            ),
        )
        return int(result.count)

    async def namespaces(self) -> dict[str, int]:
        """Every namespace with records, and how many it has."""
        await self._ensure()
        result = await self._call(
            "list namespaces",
            self._client.facet(self.collection, key="namespace", limit=100_000, exact=True),
        )
        return {str(hit.value): int(hit.count) for hit in result.hits}

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._owns_client:
            await self._client.close()

    # -- helpers ------------------------------------------------------------------------------

    def _unit(self, vector: Sequence[float], name: str) -> list[float]:
        if len(vector) != self.dimension:
            raise StoreError(
                f"{name} has a vector of dimension {len(vector)}, "
                f"but the store holds dimension {self.dimension}"
            )
        values = [float(x) for x in vector]
        norm = math.sqrt(math.fsum(x * x for x in values))
        if not norm > 0 or not math.isfinite(norm):
            raise StoreError(f"{name} has a zero or non-finite vector; cosine is undefined")
        return [x / norm for x in values]

    def _filter(self, namespace: str, where: Mapping[str, MetadataValue] | None) -> models.Filter:
        must: list[models.Condition] = [
            models.FieldCondition(key="namespace", match=models.MatchValue(value=namespace))
        ]
        must.extend(
            models.FieldCondition(key=_MATCH, match=models.MatchValue(value=token))
            for token in filter_tokens(where or {})
        )
        return models.Filter(must=must)

    async def _call(self, action: str, call: Any) -> Any:
        try:
            return await call
        except (ApiException, OSError, RuntimeError, ValueError) as e:
            detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise StoreError(f"cannot {action} in {self.where}: {detail}") from e

    async def _ensure(self) -> None:
        """Refuse work when closed; create the collection and its indexes on first use."""
        if self._closed:
            raise StoreError(f"{self.where} ({self.collection}) is closed")
        if self._ready:
            return
        if self._ready_lock is None:
            self._ready_lock = asyncio.Lock()
        async with self._ready_lock:
            if self._ready:
                return
            client = self._client
            if not await self._call("open", client.collection_exists(self.collection)):
                params = models.VectorParams(size=self.dimension, distance=models.Distance.COSINE)
                await self._call(
                    "create the collection",
                    client.create_collection(self.collection, vectors_config=params),
                )
                if not self.local:  # local mode has no payload indexes (and warns)
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        await self._call(
                            "index namespaces",
                            client.create_payload_index(
                                self.collection,
                                "namespace",
                                field_schema=models.KeywordIndexParams(
                                    type=models.KeywordIndexType.KEYWORD, is_tenant=True
                                ),
                            ),
                        )
                        await self._call(
                            "index metadata",
                            client.create_payload_index(
                                self.collection,
                                _MATCH,
                                field_schema=models.PayloadSchemaType.KEYWORD,
                            ),
                        )
            info = await self._call("open", client.get_collection(self.collection))
            vectors = info.config.params.vectors
            size = getattr(vectors, "size", None)
            distance = getattr(vectors, "distance", None)
            if size != self.dimension or distance != models.Distance.COSINE:
                raise StoreError(
                    f"collection {self.collection!r} of {self.where} holds vectors of dimension "
                    f"{size} ({distance}), not {self.dimension} (cosine)",
                    hint="use the embedding model it was built with, or another collection",
                )
            self._ready = True
