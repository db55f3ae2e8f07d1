"""The built-in ``docs`` agent end to end on the embedded stack: the real embedding model and
the real local model, documents added over HTTP, a question asked through the OpenAI client."""

from __future__ import annotations

import threading
import time
from pathlib import Path

# onnxruntime must be loaded before usearch (the vector index): the other order crashes the
# interpreter (seen with onnxruntime 1.32 and usearch on this machine). The stack loads the
# embedder first; this keeps that order when other tests in the session opened a store first.
import onnxruntime  # noqa: F401  # isort: skip
import httpx2
import openai
import pytest
import uvicorn
from conftest import free_port

from keel.config import load_settings
from keel.observe import shutdown_tracing
from keel.serve import Service
from keel.serve.app import create_app

pytestmark = pytest.mark.slow
CORPUS = Path(__file__).parents[2] / "src" / "keel" / "demo" / "corpus"


def test_the_docs_agent_answers_from_the_tenants_documents(tmp_path: Path) -> None:
    settings = load_settings(
        {
            "data_dir": tmp_path / "data",
            "llm": {"threads": 1},
            "embeddings": {"threads": 1},
        },
        environ={},
    )
    service = Service.from_settings(settings)
    secret = {}

    async def keys() -> None:
        secret["acme"] = (await service.keys.create("acme"))[1]
        secret["globex"] = (await service.keys.create("globex"))[1]

    import asyncio

    asyncio.run(keys())
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(service), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        while not server.started:
            time.sleep(0.05)
        documents = [{"source": p.name, "text": p.read_text()} for p in sorted(CORPUS.glob("*.md"))]
        r = httpx2.post(
            f"{base}/v1/memory/docs/documents",
            json={"documents": documents},
            headers={"Authorization": f"Bearer {secret['acme']}"},
            timeout=300,
        )
        assert r.status_code == 200, r.text
        assert r.json()["chunks"] >= len(documents)

        client = openai.OpenAI(base_url=f"{base}/v1", api_key=secret["acme"], max_retries=0)
        reply = client.chat.completions.create(
            model="docs",
            messages=[{"role": "user", "content": "Why is Venus so hot?"}],
            timeout=300,
        )
        answer = reply.choices[0].message.content or ""
        assert "[1]" in answer, answer
        run_id = reply.id.removeprefix("chatcmpl-")
        run = client.get(f"/runs/{run_id}", cast_to=object)
        sources = {c["source"] for c in run["state"]["citations"]}  # type: ignore[index]
        assert "03-venus.md" in sources

        other = openai.OpenAI(base_url=f"{base}/v1", api_key=secret["globex"], max_retries=0)
        empty = other.chat.completions.create(
            model="docs", messages=[{"role": "user", "content": "Why is Venus so hot?"}]
        )
        assert empty.choices[0].message.content == ""  # globex has no documents
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        shutdown_tracing()
