"""OpenAIModel through the official openai SDK against a real llama-server serving SmolLM2."""

import asyncio
import socket
from collections.abc import Iterator

import pytest
from pydantic import BaseModel

from keel.config import LLMSettings
from keel.errors import ModelRequestError, ModelUnavailableError
from keel.llm import (
    ModelSettings,
    ResponseDone,
    SystemMessage,
    TextDelta,
    UserMessage,
    create_model,
    request_structured,
)
from keel.llm.openai import OpenAIModel
from keel.llm.provider import compatible_provider

pytestmark = pytest.mark.slow

SHORT = ModelSettings(max_tokens=24, temperature=0, seed=1)


@pytest.fixture(scope="module")
def llama_server_url() -> Iterator[str]:
    """Base URL (``.../v1``) of a real OpenAI-compatible llama-server on 127.0.0.1.

    xllamacpp's ``Server`` runs llama.cpp's HTTP server in-process; port 0 picks a free port.
    """
    xllamacpp = pytest.importorskip("xllamacpp")
    from keel.llm.local import default_model_path

    params = xllamacpp.CommonParams()
    params.model.path = str(default_model_path())
    params.n_ctx = 2048
    params.use_jinja = True
    params.cpuparams.n_threads = 1
    params.cpuparams_batch.n_threads = 1
    params.verbosity = -1
    params.hostnames = ["127.0.0.1"]
    params.port = 0
    server = xllamacpp.Server(params)
    address = server.listening_address
    assert address.startswith("http://127.0.0.1:")
    yield f"{address}/v1"
    del server


@pytest.fixture
async def model(llama_server_url: str) -> OpenAIModel:
    return OpenAIModel("smollm2", compatible_provider(llama_server_url, name="llama-server"))


async def test_text_reply_with_usage(model: OpenAIModel) -> None:
    response = await asyncio.wait_for(
        model.request([UserMessage(content="Name a colour.")], settings=SHORT), 60
    )
    assert response.message.text.strip()
    assert response.usage.input_tokens > 0
    assert 0 < response.usage.output_tokens <= 24
    assert response.usage.requests == 1
    assert response.finish_reason in {"stop", "length"}


async def test_streams_text_deltas_then_the_whole_response(model: OpenAIModel) -> None:
    async def collect() -> list[object]:
        messages = [UserMessage(content="Count to five.")]
        return [e async for e in model.stream(messages, settings=SHORT)]

    events = await asyncio.wait_for(collect(), 60)
    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    done = events[-1]
    assert isinstance(done, ResponseDone)
    assert len(deltas) > 1
    assert "".join(deltas) == done.response.message.text
    assert done.response.usage.output_tokens > 0
    assert done.response.finish_reason in {"stop", "length"}


class City(BaseModel):
    name: str
    population: int


async def test_structured_output_uses_native_json_schema(model: OpenAIModel) -> None:
    result = await asyncio.wait_for(
        request_structured(
            model,
            [UserMessage(content="Give a city and its population as JSON.")],
            City,
            settings=ModelSettings(max_tokens=60, temperature=0),
        ),
        60,
    )
    assert isinstance(result.output, City)
    assert result.attempts == 1


async def test_model_string_resolves_to_the_server(llama_server_url: str) -> None:
    model = create_model(LLMSettings(), f"openai-compatible:{llama_server_url}#smollm2")
    assert isinstance(model, OpenAIModel)
    messages = [SystemMessage(content="Be brief."), UserMessage(content="Say hello.")]
    response = await asyncio.wait_for(model.request(messages, settings=SHORT), 60)
    assert response.message.text.strip()
    await model.aclose()


async def test_a_prompt_over_the_context_window_is_a_request_error(model: OpenAIModel) -> None:
    huge = "word " * 5000
    with pytest.raises(ModelRequestError) as caught:
        await asyncio.wait_for(model.request([UserMessage(content=huge)], settings=SHORT), 60)
    assert not isinstance(caught.value, ModelUnavailableError)


async def test_nothing_listening_is_a_retryable_unavailable_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    model = OpenAIModel("m", compatible_provider(f"http://127.0.0.1:{port}/v1"))
    with pytest.raises(ModelUnavailableError, match="connection to openai-compatible failed"):
        await asyncio.wait_for(model.request([UserMessage(content="hi")]), 30)
