"""The HTTP API (FastAPI): runs, their events as Server-Sent Events, traces, tenant memory.

Every route declares its response model and each error status it can return, all with one error
body (``ErrorBody``); the OpenAI-compatible routes live in ``keel.serve.openai_api``. Request
bodies larger than ``max_body_bytes`` are refused with 413 before they are read in full.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from keel.errors import AgentNotFoundError, AuthError, KeelError, ServeError
from keel.observe.records import SpanRecord, TraceSummary
from keel.serve.base import TERMINAL, RunRecord
from keel.serve.runs import RunConflictError
from keel.serve.schemas import (
    AgentInfo,
    AgentList,
    BudgetCounters,
    BudgetStatus,
    DocumentsAdded,
    DocumentsIn,
    ErrorBody,
    Health,
    InterruptAnswer,
    InterruptInfo,
    Run,
    RunCreate,
    RunList,
    SearchHit,
    SearchIn,
    SearchResult,
    SpanOut,
    TraceDetail,
    TraceList,
    TraceSummaryOut,
)
from keel.serve.service import Service

__all__ = ["BODY_ERRORS", "ERRORS", "create_app", "error_response"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_STATUS_TYPES = {
    400: "invalid_json",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    500: "internal_error",
    502: "agent_failed",
}


def _doc(status: int, text: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": text}


ERRORS: dict[int | str, dict[str, Any]] = {
    401: _doc(401, "Missing, unknown or revoked API key."),
    422: _doc(422, "The request does not match the schema, or its values are invalid."),
}
BODY_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    400: _doc(400, "The body is not valid JSON."),
    413: _doc(413, "The body is larger than the service accepts."),
}
Responses = dict[int | str, dict[str, Any]]
NOT_FOUND: Responses = {404: _doc(404, "No such resource for this tenant.")}
CONFLICT: Responses = {409: _doc(409, "The run is not in a state that allows this.")}
SSE: Responses = {
    200: {
        "description": "Server-Sent Events: `event` is the kind, `id` the event number, "
        "`data` the event as JSON (seq, kind, step, node, data, path, time); a last `end` "
        "event gives the status.",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    }
}


def error_response(
    status: int, message: str, *, hint: str | None = None, type: str | None = None, **extra: Any
) -> JSONResponse:
    body = ErrorBody.model_validate(
        {
            "error": {
                "type": type or _STATUS_TYPES.get(status, "error"),
                "message": message,
                "hint": hint,
                **extra,
            }
        }
    )
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


class BodyLimit:
    """Refuses bodies over ``limit`` bytes with 413, reading at most ``limit`` + 1 chunk of it."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await self._refuse(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.limit:
                await self._refuse(scope, receive, send)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(
            413,
            f"the request body is larger than {self.limit} bytes",
            hint="send less, or raise serve.max_body_bytes",
        )
        await response(scope, receive, send)


def _run(record: RunRecord, state: dict[str, Any] | None = None) -> Run:
    return Run(
        id=record.id,
        agent=record.agent,
        status=record.status,
        input=record.input,
        output=record.output,
        error=record.error,
        interrupts=[InterruptInfo.model_validate(i) for i in record.interrupts],
        trace_ids=record.trace_ids,
        state=state,
        created_at=record.created_at,
        updated_at=record.updated_at,
    )


def _summary(s: TraceSummary) -> TraceSummaryOut:
    return TraceSummaryOut(
        trace_id=s.trace_id,
        root_name=s.root_name,
        start_ns=s.start_ns,
        wall_time_s=s.wall_time_s,
        span_count=s.span_count,
        steps=s.steps,
        model_calls=s.model_calls,
        tool_calls=s.tool_calls,
        retrievals=s.retrievals,
        input_tokens=s.input_tokens,
        output_tokens=s.output_tokens,
        status=s.status,
        errors=s.errors,
        cost_usd=s.cost_usd,
        conversation_id=s.conversation_id,
        agent_name=s.agent_name,
    )


def _span(s: SpanRecord) -> SpanOut:
    return SpanOut(
        trace_id=s.trace_id,
        span_id=s.span_id,
        parent_span_id=s.parent_span_id,
        name=s.name,
        kind=s.kind,
        start_ns=s.start_ns,
        end_ns=s.end_ns,
        status=s.status,
        status_message=s.status_message,
        attributes=dict(s.attributes),
        events=[
            {"name": e.name, "time_ns": e.time_ns, "attributes": dict(e.attributes)}
            for e in s.events
        ],
    )


_bearer = HTTPBearer(auto_error=False, description="an API key from `keel serve keys create`")


async def _tenant_of(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    service: Service = request.app.state.service
    return await service.authenticate(credentials.credentials if credentials else None)


Tenant = Annotated[str, Depends(_tenant_of)]
"""The calling tenant, from the request's API key (every route but the health check)."""
Namespace = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
RunIdPath = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="the run's id")]


async def _budget(service: Service, tenant: str) -> BudgetStatus:
    from keel.budget.base import BudgetScope, utc_day

    budgets = service.budgets
    if budgets is None:
        day = utc_day()
        return BudgetStatus(
            tenant=tenant,
            day=day,
            scope=BudgetScope.tenant(tenant).key(),
            metered=False,
            used=BudgetCounters(),
            reserved=BudgetCounters(),
            limits={},
            remaining={},
        )
    day, spend = await budgets.today(tenant)
    limits = dict(budgets.limits(tenant).items())
    used = BudgetCounters.model_validate(spend.used.model_dump())
    reserved = BudgetCounters.model_validate(spend.reserved.model_dump())
    remaining = {
        c: bound - getattr(spend.used, c) - getattr(spend.reserved, c)
        for c, bound in limits.items()
    }
    return BudgetStatus(
        tenant=tenant,
        day=day,
        scope=spend.key,
        metered=True,
        used=used,
        reserved=reserved,
        limits=limits,
        remaining=remaining,
    )


def create_app(service: Service) -> FastAPI:
    """The ASGI app of ``service``; its lifespan resumes unfinished runs and stops them."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(
        title="Keel",
        version="1",
        summary="Runs of Keel agents, their events and traces; an OpenAI-compatible endpoint.",
        lifespan=lifespan,
    )
    app.state.service = service

    @app.exception_handler(KeelError)
    async def keel_error(request: Request, exc: KeelError) -> JSONResponse:
        if isinstance(exc, AuthError):
            return error_response(401, exc.message, hint=exc.hint)
        if isinstance(exc, AgentNotFoundError):
            return error_response(
                404, exc.message, hint=exc.hint, type="agent_not_found", code="model_not_found"
            )
        if isinstance(exc, RunConflictError):
            return error_response(409, exc.message, hint=exc.hint)
        if isinstance(exc, ServeError):
            return error_response(422, exc.message, hint=exc.hint)
        return error_response(500, f"{type(exc).__name__}: {exc.message}", hint=exc.hint)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()))
        if any(e.get("type") == "json_invalid" for e in errors):
            return error_response(400, f"the body is not valid JSON: {first.get('msg')}")
        message = f"{where}: {first.get('msg')}" if where else str(first.get("msg"))
        return error_response(422, message, param=where or None)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # A bug, not bad input: say so without internals (the log has the traceback).
        return error_response(500, "the service failed to handle this request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail))

    async def owned(tenant: str, run_id: str) -> RunRecord:
        record = await service.registry.get(tenant, run_id)
        if record is None:
            raise StarletteHTTPException(404, f"no run {run_id}")
        return record

    @app.get("/healthz", response_model=Health, tags=["service"])
    async def health() -> Health:
        """Liveness: the service answers, and how many runs it is driving."""
        return Health(runs_active=service.runs.active())

    @app.get("/v1/agents", response_model=AgentList, responses=ERRORS, tags=["agents"])
    async def list_agents(tenant: Tenant) -> AgentList:
        """The agents this service runs."""
        return AgentList(
            data=[AgentInfo(name=a.name, description=a.description) for a in service.agents]
        )

    @app.post(
        "/v1/runs",
        response_model=Run,
        status_code=201,
        responses={**BODY_ERRORS, 404: _doc(404, "No agent of that name.")},
        tags=["runs"],
    )
    async def create_run(body: RunCreate, tenant: Tenant) -> Run:
        """Start a run of a named agent; it goes on in the background (follow its events)."""
        record = await service.runs.start(tenant, body.agent, body.input)
        return _run(record)

    @app.get("/v1/runs", response_model=RunList, responses=ERRORS, tags=["runs"])
    async def list_runs(
        tenant: Tenant,
        agent: Annotated[str | None, Query(max_length=100)] = None,
        status: Annotated[
            str | None, Query(pattern="^(running|interrupted|done|failed|cancelled)$")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
    ) -> RunList:
        """Your runs, newest first."""
        records = await service.registry.list_runs(tenant, agent=agent, status=status, limit=limit)
        return RunList(data=[_run(r) for r in records])

    @app.get(
        "/v1/runs/{run_id}", response_model=Run, responses={**ERRORS, **NOT_FOUND}, tags=["runs"]
    )
    async def get_run(run_id: RunIdPath, tenant: Tenant) -> Run:
        """A run with its current graph state."""
        record = await owned(tenant, run_id)
        state = None
        if await service.checkpointer.latest(run_id) is not None:
            agent = service.agents.get(record.agent)
            values, _ = await service.runs.compiled(agent, tenant).get_state(run_id)
            state = values.model_dump(mode="json")
        return _run(record, state)

    @app.post(
        "/v1/runs/{run_id}/cancel",
        response_model=Run,
        responses={**BODY_ERRORS, **NOT_FOUND, **CONFLICT},
        tags=["runs"],
    )
    async def cancel_run(run_id: RunIdPath, tenant: Tenant) -> Run:
        """Cancel a running or paused run."""
        return _run(await service.runs.cancel(await owned(tenant, run_id)))

    @app.post(
        "/v1/runs/{run_id}/interrupts/{interrupt_id}",
        response_model=Run,
        responses={**BODY_ERRORS, **NOT_FOUND, **CONFLICT},
        tags=["runs"],
    )
    async def answer_interrupt(
        run_id: RunIdPath,
        interrupt_id: Annotated[str, Path(min_length=1, max_length=500)],
        body: InterruptAnswer,
        tenant: Tenant,
    ) -> Run:
        """Approve or deny a tool call a run is waiting on; once all are answered it resumes."""
        record = await owned(tenant, run_id)
        answer = body.model_dump(exclude_none=True)
        try:
            return _run(await service.runs.answer(record, interrupt_id, answer))
        except KeyError:
            raise StarletteHTTPException(
                404, f"run {run_id} has no pending interrupt {interrupt_id!r}"
            ) from None

    @app.get(
        "/v1/runs/{run_id}/events",
        response_class=StreamingResponse,
        responses={**SSE, **ERRORS, **NOT_FOUND},
        tags=["runs"],
    )
    async def run_events(
        run_id: RunIdPath,
        tenant: Tenant,
        after: Annotated[int, Query(ge=0, description="replay events after this number")] = 0,
        last_event_id: Annotated[str | None, Header(max_length=20)] = None,
    ) -> StreamingResponse:
        """The run's events as Server-Sent Events, from the start (or after ``Last-Event-ID``);
        the stream ends when the run ends or waits for input."""
        await owned(tenant, run_id)
        if last_event_id is not None and last_event_id.strip().isdigit():
            after = max(after, int(last_event_id))
        return StreamingResponse(
            _event_stream(service, tenant, run_id, after),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @app.get("/v1/budget", response_model=BudgetStatus, responses=ERRORS, tags=["budget"])
    async def get_budget(tenant: Tenant) -> BudgetStatus:
        """The calling tenant's spend against its daily limits (today, UTC); never another's."""
        return await _budget(service, tenant)

    @app.get("/v1/traces", response_model=TraceList, responses=ERRORS, tags=["traces"])
    async def list_traces(
        tenant: Tenant, limit: Annotated[int, Query(ge=1, le=100)] = 20
    ) -> TraceList:
        """Summaries of the traces of your runs, newest first."""
        if service.traces is None:
            return TraceList(data=[])
        summaries = []
        for trace_id in await service.registry.trace_ids(tenant, limit):
            with contextlib.suppress(KeelError):
                summaries.append(_summary(service.traces.summary(trace_id)))
        return TraceList(data=summaries)

    @app.get(
        "/v1/traces/{trace_id}",
        response_model=TraceDetail,
        responses={**ERRORS, **NOT_FOUND},
        tags=["traces"],
    )
    async def get_trace(
        trace_id: Annotated[str, Path(pattern=r"^[0-9a-f]{32}$")], tenant: Tenant
    ) -> TraceDetail:
        """Every span of one of your traces, and its summary."""
        if service.traces is None or not await service.registry.has_trace(tenant, trace_id):
            raise StarletteHTTPException(404, f"no trace {trace_id}")
        try:
            spans = service.traces.trace(trace_id)
        except KeelError:
            raise StarletteHTTPException(404, f"no trace {trace_id} in the store") from None
        from keel.observe.records import summarize_trace

        return TraceDetail(
            summary=_summary(summarize_trace(spans)), spans=[_span(s) for s in spans]
        )

    @app.post(
        "/v1/memory/{namespace}/documents",
        response_model=DocumentsAdded,
        responses=BODY_ERRORS,
        tags=["memory"],
    )
    async def add_documents(
        namespace: Namespace, body: DocumentsIn, tenant: Tenant
    ) -> DocumentsAdded:
        """Chunk, embed and store documents in one of your memory namespaces."""
        docs = [(d.source, d.text, dict(d.metadata)) for d in body.documents]
        chunks = await service.memory.add(tenant, namespace, docs)
        return DocumentsAdded(namespace=namespace, chunks=chunks)

    @app.post(
        "/v1/memory/{namespace}/search",
        response_model=SearchResult,
        responses=BODY_ERRORS,
        tags=["memory"],
    )
    async def search_memory(namespace: Namespace, body: SearchIn, tenant: Tenant) -> SearchResult:
        """The chunks of one of your namespaces most similar to a query."""
        hits = await service.memory.search(tenant, namespace, body.query, body.k)
        return SearchResult(
            namespace=namespace,
            hits=[
                SearchHit(id=h.id, text=h.text, score=h.score, metadata=dict(h.metadata))
                for h in hits
            ],
        )

    from keel.serve.openai_api import add_openai_routes

    add_openai_routes(app, service)
    app.add_middleware(BodyLimit, limit=service.max_body_bytes)
    return app


async def _event_stream(
    service: Service, tenant: str, run_id: str, after: int
) -> AsyncIterator[str]:
    """Stored events after ``after``, then new ones as they come, until the run stops."""
    runs = service.runs
    while True:
        signal = runs.signal(run_id)
        events = await service.events.read(run_id, after)
        for event in events:
            after = event.seq
            yield f"id: {event.seq}\nevent: {event.kind}\ndata: {event.model_dump_json()}\n\n"
        if events:
            continue
        record = await service.registry.get(tenant, run_id)
        if record is None or record.status in TERMINAL or record.status == "interrupted":
            if await service.events.read(run_id, after, limit=1):
                continue  # events appended just before the status changed
            end = {"status": record.status if record else "unknown"}
            yield f"event: end\ndata: {json.dumps(end)}\n\n"
            return
        if runs.closing:
            return
        try:
            await asyncio.wait_for(signal.wait(), timeout=service.keepalive_s)
        except TimeoutError:
            yield ": keep-alive\n\n"
