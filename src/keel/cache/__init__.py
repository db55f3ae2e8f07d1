"""The response cache: exact and semantic caching of model responses (``CachedModel``).

Backends: ``SQLiteCacheBackend`` (embedded: one SQLite file and an in-process usearch index) and
``RedisCacheBackend`` (shared by processes). The semantic threshold is calibrated on a labelled
set of paraphrase / non-paraphrase pairs (``keel cache calibrate``), not guessed. Names are
imported on first use, so ``import keel.cache`` loads neither numpy, usearch nor redis.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from keel._lazy import lazy_exports

if TYPE_CHECKING:
    from keel.cache.base import (
        CacheBackend,
        CacheEntry,
        CacheStats,
        NamespaceStats,
        SemanticItem,
        SemanticMatch,
    )
    from keel.cache.calibrate import Calibration, PairSet, calibrate, load_pairs
    from keel.cache.factory import cached_model, open_cache_backend
    from keel.cache.keys import CacheKey, cache_key
    from keel.cache.model import DEFAULT_THRESHOLD, CacheCounters, CachedModel
    from keel.cache.redis_backend import RedisCacheBackend
    from keel.cache.sqlite_backend import SQLiteCacheBackend

__all__ = [
    "DEFAULT_THRESHOLD",
    "CacheBackend",
    "CacheCounters",
    "CacheEntry",
    "CacheKey",
    "CacheStats",
    "CachedModel",
    "Calibration",
    "NamespaceStats",
    "PairSet",
    "RedisCacheBackend",
    "SQLiteCacheBackend",
    "SemanticItem",
    "SemanticMatch",
    "cache_key",
    "cached_model",
    "calibrate",
    "load_pairs",
    "open_cache_backend",
]

_WHERE = {
    "DEFAULT_THRESHOLD": "keel.cache.model",
    "CacheBackend": "keel.cache.base",
    "CacheCounters": "keel.cache.model",
    "CacheEntry": "keel.cache.base",
    "CacheKey": "keel.cache.keys",
    "CacheStats": "keel.cache.base",
    "CachedModel": "keel.cache.model",
    "Calibration": "keel.cache.calibrate",
    "NamespaceStats": "keel.cache.base",
    "PairSet": "keel.cache.calibrate",
    "RedisCacheBackend": "keel.cache.redis_backend",
    "SQLiteCacheBackend": "keel.cache.sqlite_backend",
    "SemanticItem": "keel.cache.base",
    "SemanticMatch": "keel.cache.base",
    "cache_key": "keel.cache.keys",
    "cached_model": "keel.cache.factory",
    "calibrate": "keel.cache.calibrate",
    "load_pairs": "keel.cache.calibrate",
    "open_cache_backend": "keel.cache.factory",
}

__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
