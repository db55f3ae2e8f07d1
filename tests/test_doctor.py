"""`keel doctor` exercises every layer for real and says what to fix when one fails."""

from pathlib import Path

import pytest

from keel.config import load_settings
from keel.doctor import run_checks

pytestmark = pytest.mark.slow


async def test_every_layer_is_checked_and_works_here(tmp_path: Path) -> None:
    checks = await run_checks(load_settings({"data_dir": tmp_path}, environ={}))
    layers = {c.layer: c for c in checks}
    assert set(layers) == {"llm", "embeddings", "vector memory", "tracing", "tools", "sandbox"}
    assert all(c.ok for c in checks), [(c.layer, c.detail) for c in checks if not c.ok]
    assert "generated" in layers["llm"].detail
    assert "384 dimensions" in layers["embeddings"].detail


async def test_a_broken_layer_is_reported_with_a_fix(tmp_path: Path) -> None:
    settings = load_settings(
        {"data_dir": tmp_path, "llm": {"model": f"local:{tmp_path / 'missing.gguf'}"}}, environ={}
    )
    checks = {c.layer: c for c in await run_checks(settings)}
    assert not checks["llm"].ok
    assert "model file does not exist" in checks["llm"].detail
    assert checks["llm"].fix
    assert checks["tools"].ok
