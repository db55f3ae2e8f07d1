"""``[cache]`` settings wire a ``CachedModel`` around the model of ``keel.stack.open_model``."""

from __future__ import annotations

from pathlib import Path

import pytest

from keel.cache import CachedModel, RedisCacheBackend, SQLiteCacheBackend
from keel.cache.factory import open_cache_backend
from keel.config import load_settings
from keel.errors import ConfigError
from keel.stack import open_model


@pytest.mark.slow  # loads the local model
async def test_open_model_wraps_the_stack_when_the_cache_is_enabled(tmp_path: Path) -> None:
    settings = load_settings(
        {"data_dir": tmp_path, "cache": {"enabled": True, "namespace": "tenant/agent"}},
        environ={},
    )
    model = open_model(settings)
    try:
        assert isinstance(model, CachedModel)
        assert isinstance(model.backend, SQLiteCacheBackend)
        assert model.backend.path == tmp_path / "cache.db"
        assert model.namespace == "tenant/agent" and model.embedder is None
        assert model.default_temperature == settings.llm.temperature  # the local model's
    finally:
        await model.aclose()


async def test_redis_settings_build_a_redis_backend_without_leaking_the_password() -> None:
    settings = load_settings(
        {"cache": {"backend": "redis", "redis_url": "redis://:s3cret@10.0.0.5:6380/2"}},
        environ={},
    )
    backend = open_cache_backend(settings)
    assert isinstance(backend, RedisCacheBackend)
    assert backend.location == "10.0.0.5:6380/2"
    await backend.close()
    with pytest.raises(ConfigError, match=r"cache\.threshold"):
        load_settings({"cache": {"threshold": 1.5}}, environ={})
