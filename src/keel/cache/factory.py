"""Builds the configured cache backend and wraps a model in it, from ``[cache]`` settings."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from keel.errors import ConfigError

if TYPE_CHECKING:
    from keel.cache.base import CacheBackend
    from keel.cache.model import CachedModel
    from keel.config import KeelSettings
    from keel.llm.base import Model
    from keel.llm.cost import PriceTable
    from keel.tools.registry import ToolRegistry

__all__ = ["cached_model", "open_cache_backend", "redis_location"]


def redis_location(url: str) -> str:
    """``host:port/db`` of a Redis URL, without user or password, for messages."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "redis (malformed URL)"
    return f"{parts.hostname or '127.0.0.1'}:{port or 6379}{parts.path or '/0'}"


def open_cache_backend(settings: KeelSettings) -> CacheBackend:
    """The ``cache.backend`` of ``settings``: the SQLite file under ``data_dir`` or Redis."""
    if settings.cache.backend == "redis":
        from redis.asyncio import Redis

        from keel.cache.redis_backend import RedisCacheBackend

        location = redis_location(settings.cache.redis_url)
        try:
            client = Redis.from_url(settings.cache.redis_url)
        except ValueError:
            raise ConfigError(f"invalid cache.redis_url for {location}") from None
        return RedisCacheBackend(client, location=location, owns_client=True)
    from keel.cache.sqlite_backend import SQLiteCacheBackend

    return SQLiteCacheBackend(settings.cache_path)


def cached_model(
    model: Model,
    settings: KeelSettings,
    *,
    registry: ToolRegistry | None = None,
    prices: PriceTable | None = None,
    default_temperature: float | None = None,
) -> CachedModel:
    """``model`` wrapped in the cache ``[cache]`` describes (semantic with the configured
    embedder when ``cache.semantic``)."""
    from keel.cache.model import CachedModel

    embedder = None
    if settings.cache.semantic:
        from keel.memory.factory import create_embedder

        embedder = create_embedder(settings.embeddings)
    return CachedModel(
        model,
        open_cache_backend(settings),
        namespace=settings.cache.namespace,
        embedder=embedder,
        threshold=settings.cache.threshold,
        ttl=settings.cache.ttl_s or None,
        cache_sampled=settings.cache.cache_sampled,
        default_temperature=default_temperature,
        registry=registry,
        prices=prices,
        owns_backend=True,
    )
