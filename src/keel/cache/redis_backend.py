"""The Redis cache backend: entries as keys with a TTL, semantic vectors in per-scope streams.

Install with ``pip install 'keel[redis]'`` (and ``keel[ann]`` for the semantic part). Layout,
under ``prefix`` and a short hash of the namespace (``nsid``)::

    {prefix}ns                     hash   nsid -> namespace name (for clear and stats)
    {prefix}{nsid}:e:{key}         string the entry (JSON), expiring with PX = ttl
    {prefix}{nsid}:v:{scope}       stream one item per semantic entry: the key and its vector

Redis 7.0 as Debian ships it has no vector search (that is the RediSearch module), so the
vectors live in Redis and the search runs in this process: each scope's stream is read into a
``ScopeIndex`` (usearch) once, then only the items added since the last read are fetched
(``XRANGE`` from the last seen id), so every process sharing the server sees every entry. A
candidate is served only if its entry key still exists, so expiry (Redis drops the key) and
``clear`` (keys unlinked) take effect at once; dead candidates leave the local index, and a
stream expires with the last entry written to it. The client is handed in (Keel does not decide
how you connect); it must not decode responses, since vectors are bytes.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from keel.cache.base import (
    CacheBackend,
    CacheEntry,
    CacheStats,
    NamespaceStats,
    SemanticItem,
    SemanticMatch,
    in_namespace,
)
from keel.errors import CacheError, MissingDependencyError

try:
    import redis.asyncio
    from redis.exceptions import RedisError
except ImportError as e:  # pragma: no cover - depends on the environment
    raise MissingDependencyError("redis", "redis", feature="the Redis response cache") from e

if TYPE_CHECKING:
    from keel.cache.vector_index import ScopeIndex

__all__ = ["RedisCacheBackend"]

_GLOB = re.compile(r"([*?\[\]\\])")


class _Scope:
    """The local index of one stream, the last stream id read, and local id -> entry key."""

    def __init__(self, index: ScopeIndex) -> None:
        self.index = index
        self.last_id = "0-0"
        self.keys: dict[int, str] = {}


class RedisCacheBackend(CacheBackend):
    """Cache entries in the Redis server behind ``client``, under ``prefix``.

    ``location`` names the server in messages (never the URL, which may hold a password).
    """

    name = "redis"

    def __init__(
        self,
        client: redis.asyncio.Redis,
        *,
        prefix: str = "keel:cache:",
        exact_below: int = 4096,
        location: str = "redis",
        owns_client: bool = False,
    ) -> None:
        if client.get_connection_kwargs().get("decode_responses"):  # type: ignore[no-untyped-call]
            raise ValueError("the Redis client must not decode responses (vectors are bytes)")
        self.client = client
        self.prefix = prefix
        self.exact_below = exact_below
        self.location = location
        self.owns_client = owns_client
        self._scopes: dict[tuple[str, str], _Scope] = {}
        self._scope_locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._next_id = 1

    def _nsid(self, namespace: str) -> str:
        return hashlib.sha256(namespace.encode()).hexdigest()[:16]

    def _entry_key(self, namespace: str, key: str) -> str:
        return f"{self.prefix}{self._nsid(namespace)}:e:{key}"

    def _stream_key(self, namespace: str, scope: str) -> str:
        return f"{self.prefix}{self._nsid(namespace)}:v:{scope}"

    def _error(self, what: str, e: Exception) -> CacheError:
        # The client's own message names host and port, never the password of the URL.
        return CacheError(f"cannot {what} the Redis response cache ({self.location}): {e}")

    async def get(self, namespace: str, key: str) -> CacheEntry | None:
        try:
            raw = await self.client.get(self._entry_key(namespace, key))
        except (RedisError, OSError) as e:
            raise self._error("read", e) from e
        return None if raw is None else _decode(raw)

    async def put(
        self, namespace: str, entry: CacheEntry, semantic: SemanticItem | None = None
    ) -> None:
        await self.put_many(namespace, [(entry, semantic)])

    async def put_many(
        self, namespace: str, items: Sequence[tuple[CacheEntry, SemanticItem | None]]
    ) -> None:
        from array import array

        now = time.time()
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(f"{self.prefix}ns", self._nsid(namespace), namespace)
        for entry, semantic in items:
            ttl_ms = None
            if entry.expires_at is not None:
                ttl_ms = max(1, int((entry.expires_at - now) * 1000))
            payload: dict[str, Any] = {"entry": entry.model_dump(mode="json")}
            if semantic is not None:
                payload["scope"] = semantic.scope
            pipe.set(self._entry_key(namespace, entry.key), json.dumps(payload), px=ttl_ms)
            if semantic is not None:
                stream = self._stream_key(namespace, semantic.scope)
                vector = array("f", semantic.vector).tobytes()
                pipe.xadd(stream, {"k": entry.key, "v": vector})
                if ttl_ms is None:
                    pipe.persist(stream)
                else:  # the stream outlives none of its entries by more than their TTL
                    pipe.pexpire(stream, ttl_ms, gt=True)
                    pipe.pexpire(stream, ttl_ms, nx=True)
        try:
            await pipe.execute()
        except (RedisError, OSError) as e:
            raise self._error("write", e) from e

    async def nearest(
        self, namespace: str, scope: str, vector: Sequence[float], min_similarity: float
    ) -> SemanticMatch | None:
        from keel.cache.vector_index import as_matrix

        query = as_matrix([vector], len(vector))[0]
        try:
            async with self._scope_locks.setdefault((namespace, scope), asyncio.Lock()):
                state = await self._catch_up(namespace, scope, len(vector))
            if not len(state.index):
                return None
            candidates = [
                (local, similarity)
                for local, similarity in state.index.search(query, 8)
                if similarity >= min_similarity
            ]
            if not candidates:
                return None
            keys = [self._entry_key(namespace, state.keys[local]) for local, _ in candidates]
            raws = await self.client.mget(keys)
        except (RedisError, OSError) as e:
            raise self._error("search", e) from e
        for (local, similarity), raw in zip(candidates, raws, strict=True):
            if raw is None:  # expired or cleared: never served again
                state.index.remove(local)
                state.keys.pop(local, None)
                continue
            return SemanticMatch(entry=_decode(raw), similarity=similarity)
        return None

    async def _catch_up(self, namespace: str, scope: str, dimension: int) -> _Scope:
        import numpy as np

        from keel.cache.vector_index import ScopeIndex

        state = self._scopes.get((namespace, scope))
        if state is None:
            state = _Scope(ScopeIndex(dimension, exact_below=self.exact_below))
            self._scopes[(namespace, scope)] = state
        if state.index.dimension != dimension:
            raise CacheError(
                f"query vector has {dimension} dimensions, the cached ones {state.index.dimension}"
            )
        stream = self._stream_key(namespace, scope)
        while True:
            items: list[Any] = (
                await self.client.xrange(stream, f"({state.last_id}", "+", count=10_000) or []
            )
            if not items:
                return state
            ids: list[int] = []
            vectors: list[bytes] = []
            for _item_id, fields in items:
                raw_vector = fields.get(b"v", b"")
                if len(raw_vector) != 4 * dimension:
                    continue
                ids.append(self._next_id)
                state.keys[self._next_id] = fields[b"k"].decode()
                vectors.append(raw_vector)
                self._next_id += 1
            state.last_id = items[-1][0].decode()
            if ids:
                matrix = np.frombuffer(b"".join(vectors), dtype=np.float32)
                matrix = matrix.reshape(len(ids), dimension)
                if len(ids) > 1000:  # a rebuild: off the event loop
                    await asyncio.to_thread(state.index.add, ids, matrix)
                else:
                    state.index.add(ids, matrix)

    async def _namespaces(self) -> dict[str, str]:
        raw: dict[Any, Any] = await self.client.hgetall(f"{self.prefix}ns")
        return {bytes(k).decode(): bytes(v).decode() for k, v in raw.items()}

    async def _scan(self, pattern: str) -> list[bytes]:
        return [key async for key in self.client.scan_iter(match=pattern, count=1000)]

    async def clear(self, namespace: str | None = None) -> int:
        removed = 0
        glob_prefix = _GLOB.sub(r"\\\1", self.prefix)
        try:
            for nsid, name in (await self._namespaces()).items():
                if not in_namespace(name, namespace):
                    continue
                keys = await self._scan(f"{glob_prefix}{nsid}:*")
                removed += sum(1 for k in keys if k.startswith(f"{self.prefix}{nsid}:e:".encode()))
                for start in range(0, len(keys), 1000):
                    await self.client.unlink(*keys[start : start + 1000])
                await self.client.hdel(f"{self.prefix}ns", nsid)
        except (RedisError, OSError) as e:
            raise self._error("clear", e) from e
        for ns, scope in list(self._scopes):
            if in_namespace(ns, namespace):
                del self._scopes[(ns, scope)]
        return removed

    async def stats(self) -> CacheStats:
        glob_prefix = _GLOB.sub(r"\\\1", self.prefix)
        namespaces: list[NamespaceStats] = []
        try:
            for nsid, name in sorted((await self._namespaces()).items(), key=lambda x: x[1]):
                keys = await self._scan(f"{glob_prefix}{nsid}:e:*")
                entries = semantic = 0
                for start in range(0, len(keys), 1000):
                    for raw in await self.client.mget(keys[start : start + 1000]):
                        if raw is not None:
                            entries += 1
                            semantic += b'"scope"' in raw
                if entries:
                    namespaces.append(
                        NamespaceStats(namespace=name, entries=entries, semantic_entries=semantic)
                    )
        except (RedisError, OSError) as e:
            raise self._error("read", e) from e
        return CacheStats(
            backend=self.name,
            location=self.location,
            entries=sum(n.entries for n in namespaces),
            semantic_entries=sum(n.semantic_entries for n in namespaces),
            namespaces=namespaces,
        )

    async def close(self) -> None:
        """Closes the client only if this backend created it (``owns_client``)."""
        if self.owns_client:
            await self.client.aclose()


def _decode(raw: Any) -> CacheEntry:
    data = json.loads(raw)
    return CacheEntry.model_validate(data["entry"])
