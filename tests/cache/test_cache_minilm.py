"""The semantic cache with the real local embedder (all-MiniLM-L6-v2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from keel.cache import CachedModel, SQLiteCacheBackend
from keel.llm import AssistantMessage, ModelSettings, TextPart, UserMessage
from keel.llm.testing import FunctionModel, ModelCall

pytestmark = pytest.mark.slow


def echo(call: ModelCall) -> AssistantMessage:
    return AssistantMessage(parts=(TextPart(text=f"answer to: {call.last_user_text}"),))


async def test_minilm_semantic_hits_and_misses(tmp_path: Path) -> None:
    from keel.memory.onnx_embedder import MiniLMEmbedder

    backend = SQLiteCacheBackend(tmp_path / "cache.db")
    inner = FunctionModel(echo)
    model = CachedModel(inner, backend, embedder=MiniLMEmbedder(threads=2), threshold=0.9)
    greedy = ModelSettings(temperature=0)
    try:
        await model.request([UserMessage(content="How do I reset my password?")], settings=greedy)
        hit = await model.request(
            [UserMessage(content="how do i reset my password")], settings=greedy
        )
        assert hit.message.text == "answer to: How do I reset my password?"
        miss = await model.request(
            [UserMessage(content="What is the boiling point of water?")], settings=greedy
        )
        assert miss.message.text == "answer to: What is the boiling point of water?"
        assert model.counters.semantic_hits == 1 and len(inner.calls) == 2
    finally:
        await backend.close()
