"""OpenAI-compatible ``/v1/chat/completions`` and ``/v1/models``: each agent is a "model".

A chat request becomes a run of the agent (recorded, traced and durable like any other run);
with ``stream: true`` the agent's ``token`` events go out as ``chat.completion.chunk`` SSE
messages, ending with ``data: [DONE]``. A run that pauses for approval answers with a message
naming the run, so a human can approve it through the runs API.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse, StreamingResponse

from keel.errors import ServeError
from keel.llm.messages import AssistantMessage, Message, SystemMessage, TextPart, UserMessage
from keel.serve.app import BODY_ERRORS, ERRORS, Tenant, _doc, error_response
from keel.serve.base import TERMINAL, RunRecord
from keel.serve.runs import BUDGET_EXCEEDED
from keel.serve.schemas import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessageIn,
    ChatMessageOut,
    Choice,
    ChunkChoice,
    CompletionUsage,
    Delta,
    ErrorBody,
    ModelInfo,
    ModelList,
)
from keel.serve.service import Service

__all__ = ["add_openai_routes", "to_messages"]


def _text(message: ChatMessageIn) -> str:
    if message.content is None:
        return ""
    if isinstance(message.content, str):
        return message.content
    return "".join(p.text or "" for p in message.content if p.type == "text")


def to_messages(messages: Sequence[ChatMessageIn]) -> list[Message]:
    """OpenAI chat messages as Keel messages (text only; tool messages are refused)."""
    out: list[Message] = []
    for m in messages:
        text = _text(m)
        if m.role in ("system", "developer"):
            out.append(SystemMessage(content=text))
        elif m.role == "user":
            out.append(UserMessage(content=text))
        elif m.role == "assistant":
            out.append(AssistantMessage(parts=(TextPart(text=text),) if text else ()))
        else:
            raise ServeError(
                "tool messages are not accepted: a Keel agent runs its own tools",
                hint="send system, user and assistant messages",
            )
    return out


def _reply(record: RunRecord) -> str:
    if record.status == "done":
        return record.output or ""
    if record.status == "interrupted":
        asks = ", ".join(i["id"] for i in record.interrupts)
        return (
            f"[keel] run {record.id} is waiting for approval ({asks}); answer it with "
            f"POST /v1/runs/{record.id}/interrupts/ID"
        )
    return f"[keel] run {record.id} {record.status}"


async def _usage(service: Service, record: RunRecord) -> CompletionUsage:
    if await service.checkpointer.latest(record.id) is None:
        return CompletionUsage()
    agent = service.agents.get(record.agent)
    state, _ = await service.runs.compiled(agent, record.tenant).get_state(record.id)
    usage = getattr(state, "usage", None)
    if usage is None:
        return CompletionUsage()
    return CompletionUsage(
        prompt_tokens=usage.input_tokens,
        completion_tokens=usage.output_tokens,
        total_tokens=usage.input_tokens + usage.output_tokens,
    )


def add_openai_routes(app: FastAPI, service: Service) -> None:
    @app.get("/v1/models", response_model=ModelList, responses=ERRORS, tags=["openai"])
    async def list_models(tenant: Tenant) -> ModelList:
        """Every agent, as an OpenAI model id."""
        return ModelList(data=[ModelInfo(id=a.name) for a in service.agents])

    @app.post(
        "/v1/chat/completions",
        response_model=ChatCompletion,
        responses={
            200: {
                "description": "A chat completion, or with `stream: true` Server-Sent Events "
                "of chat.completion.chunk objects ending with `data: [DONE]`.",
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            },
            **BODY_ERRORS,
            404: _doc(404, "No agent (model) of that name."),
            502: {"model": ErrorBody, "description": "The agent's run failed."},
        },
        tags=["openai"],
    )
    async def chat_completions(
        body: ChatCompletionRequest,
        tenant: Tenant,
    ) -> Any:
        """Run an agent on a conversation, the way OpenAI's API runs a model."""
        agent = service.agents.get(body.model)
        graph_input = agent.input_from_messages(to_messages(body.messages))
        record = await service.runs.start_input(tenant, agent.name, graph_input)
        completion_id = f"chatcmpl-{record.id}"
        created = int(time.time())
        if body.stream:
            return StreamingResponse(
                _chunks(service, record, completion_id, created, body.model),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache"},
            )
        await service.runs.wait(record.id)
        found = await service.registry.get(tenant, record.id)
        assert found is not None
        if found.status == "failed":
            over = (found.error or "").startswith(BUDGET_EXCEEDED)
            return error_response(
                502,
                f"the run of agent {agent.name!r} failed: {found.error}",
                code=found.id,
                type=BUDGET_EXCEEDED if over else None,
                hint="see GET /v1/budget; raise the limit in [budget]" if over else None,
            )
        completion = ChatCompletion(
            id=completion_id,
            created=created,
            model=body.model,
            choices=[Choice(message=ChatMessageOut(content=_reply(found)))],
            usage=await _usage(service, found),
            keel_run_id=found.id,
        )
        return JSONResponse(completion.model_dump(mode="json"))


async def _chunks(
    service: Service, record: RunRecord, completion_id: str, created: int, model: str
) -> AsyncIterator[str]:
    def chunk(delta: Delta, finish: Any = None) -> str:
        c = ChatCompletionChunk(
            id=completion_id,
            created=created,
            model=model,
            choices=[ChunkChoice(delta=delta, finish_reason=finish)],
        )
        return f"data: {c.model_dump_json(exclude_none=False)}\n\n"

    yield chunk(Delta(role="assistant", content=""))
    streamed = False
    after = 0
    runs = service.runs
    while True:
        signal = runs.signal(record.id)
        events = await service.events.read(record.id, after)
        for event in events:
            after = event.seq
            data = event.data if isinstance(event.data, dict) else {}
            if event.kind == "custom" and data.get("name") == "token":
                text = data.get("data")
                if isinstance(text, str) and text:
                    streamed = True
                    yield chunk(Delta(content=text))
        if events:
            continue
        found = await service.registry.get(record.tenant, record.id)
        if found is None or found.status in TERMINAL or found.status == "interrupted":
            if await service.events.read(record.id, after, limit=1):
                continue
            if found is not None and (not streamed or found.status != "done"):
                yield chunk(Delta(content=_reply(found)))
            yield chunk(Delta(), "stop")
            yield "data: [DONE]\n\n"
            return
        if runs.closing:
            return
        await signal.wait()
