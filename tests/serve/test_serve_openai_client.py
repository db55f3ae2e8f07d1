"""The OpenAI-compatible endpoint, driven by the official ``openai`` client over real HTTP."""

from __future__ import annotations

import openai
import pytest
from conftest import Live


def client(live: Live, tenant: str = "acme") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live.base_url}/v1", api_key=live.keys[tenant], max_retries=0)


def test_models_are_the_agents(live: Live) -> None:
    ids = sorted(m.id for m in client(live).models.list())
    assert ids == ["docs", "echo", "gated", "mailer"]


def test_a_chat_completion_is_a_run_of_the_agent(live: Live) -> None:
    reply = client(live).chat.completions.create(
        model="echo",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is Keel?"},
        ],
        temperature=0.2,
    )
    assert reply.choices[0].message.content == "echo: What is Keel?"
    assert reply.choices[0].finish_reason == "stop" and reply.model == "echo"
    run_id = reply.id.removeprefix("chatcmpl-")
    runs = client(live).get(f"/runs/{run_id}", cast_to=object)
    assert runs["status"] == "done" and runs["agent"] == "echo"  # type: ignore[index]


def test_a_streamed_chat_completion_sends_the_agents_tokens(live: Live) -> None:
    stream = client(live).chat.completions.create(
        model="echo", messages=[{"role": "user", "content": "stream me"}], stream=True
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == "echo: stream me"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.object == "chat.completion.chunk" for c in chunks)


def test_a_run_waiting_for_approval_says_so(live: Live) -> None:
    reply = client(live).chat.completions.create(
        model="mailer", messages=[{"role": "user", "content": "mail ana"}]
    )
    content = reply.choices[0].message.content or ""
    assert "waiting for approval" in content and "/interrupts/" in content


def test_errors_reach_the_client_as_typed_openai_errors(live: Live) -> None:
    with pytest.raises(openai.NotFoundError) as found:
        client(live).chat.completions.create(
            model="nobody", messages=[{"role": "user", "content": "hi"}]
        )
    assert "no agent named 'nobody'" in str(found.value)
    bad = openai.OpenAI(base_url=f"{live.base_url}/v1", api_key="keel_x_y", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    with pytest.raises(openai.UnprocessableEntityError):
        client(live).chat.completions.create(
            model="echo", messages=[{"role": "tool", "content": "x", "tool_call_id": "1"}]
        )
