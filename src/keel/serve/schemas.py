"""The service's wire types: what every route takes and returns (and so its OpenAPI spec)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AgentInfo",
    "AgentList",
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatCompletionRequest",
    "ChatMessageIn",
    "DocumentIn",
    "DocumentsIn",
    "DocumentsAdded",
    "ErrorBody",
    "ErrorDetail",
    "Health",
    "InterruptAnswer",
    "InterruptInfo",
    "ModelInfo",
    "ModelList",
    "Run",
    "RunCreate",
    "RunList",
    "SearchHit",
    "SearchIn",
    "SearchResult",
    "SpanOut",
    "TraceDetail",
    "TraceList",
    "TraceSummaryOut",
]

Name = Annotated[str, Field(min_length=1, max_length=100)]
RunId = Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorDetail(BaseModel):
    """What went wrong: a stable ``type`` to branch on and a message to show."""

    type: str = Field(description="e.g. invalid_json, invalid_request, not_found, unauthorized")
    message: str
    hint: str | None = None
    code: str | None = None
    param: str | None = None


class ErrorBody(BaseModel):
    """The body of every error response (the shape OpenAI clients read as well)."""

    error: ErrorDetail


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    runs_active: int


class AgentInfo(BaseModel):
    name: str
    description: str


class AgentList(BaseModel):
    data: list[AgentInfo]


class RunCreate(_In):
    """Start a run: the agent's name and its input (text, or the graph state's fields)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"agent": "docs", "input": "Why is Venus so hot?"}]},
    )

    agent: Name
    input: Annotated[str, Field(min_length=1, max_length=100_000, pattern=r"\S")] | dict[str, Any]


class InterruptInfo(BaseModel):
    """A question a paused run asks; answer it by ``id``."""

    id: str
    node: str
    value: Any = None


class Run(BaseModel):
    """A run: where it is, what it produced, and (on ``GET /v1/runs/{id}``) its graph state."""

    id: str
    agent: str
    status: Literal["running", "interrupted", "done", "failed", "cancelled"]
    input: Any = None
    output: str | None = None
    error: str | None = None
    interrupts: list[InterruptInfo] = Field(default_factory=list)
    trace_ids: list[str] = Field(default_factory=list)
    state: dict[str, Any] | None = None
    created_at: float
    updated_at: float


class RunList(BaseModel):
    data: list[Run]


class InterruptAnswer(_In):
    """A human's answer to an approval request: approve (maybe with edited arguments) or deny."""

    approved: bool
    arguments: dict[str, Any] | None = None
    reason: Annotated[str, Field(max_length=2000)] | None = None


class TraceSummaryOut(BaseModel):
    trace_id: str
    root_name: str
    start_ns: int
    wall_time_s: float
    span_count: int
    steps: int
    model_calls: int
    tool_calls: int
    retrievals: int
    input_tokens: int
    output_tokens: int
    status: Literal["ok", "error"]
    errors: int
    cost_usd: float
    conversation_id: str | None = None
    agent_name: str | None = None


class TraceList(BaseModel):
    data: list[TraceSummaryOut]


class SpanOut(BaseModel):
    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: str
    start_ns: int
    end_ns: int
    status: str
    status_message: str
    attributes: dict[str, Any]
    events: list[dict[str, Any]]


class TraceDetail(BaseModel):
    summary: TraceSummaryOut
    spans: list[SpanOut]


MetadataValue = str | int | float | bool


class DocumentIn(_In):
    source: Annotated[str, Field(min_length=1, max_length=500)]
    text: Annotated[str, Field(min_length=1, max_length=500_000)]
    metadata: dict[Annotated[str, Field(max_length=100)], MetadataValue] = Field(
        default_factory=dict, max_length=50
    )


class DocumentsIn(_In):
    documents: Annotated[list[DocumentIn], Field(min_length=1, max_length=100)]


class DocumentsAdded(BaseModel):
    namespace: str
    chunks: int


class SearchIn(_In):
    query: Annotated[str, Field(min_length=1, max_length=2000, pattern=r"\S")]
    k: Annotated[int, Field(ge=1, le=50)] = 4


class SearchHit(BaseModel):
    id: str
    text: str
    score: float
    metadata: dict[str, MetadataValue]


class SearchResult(BaseModel):
    namespace: str
    hits: list[SearchHit]


# -- OpenAI-compatible --------------------------------------------------------------------


class ContentPart(BaseModel):
    type: str
    text: str | None = None


class ChatMessageIn(BaseModel):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Annotated[str, Field(max_length=100_000)] | list[ContentPart] | None = None
    name: str | None = None


class ChatCompletionRequest(BaseModel):
    """OpenAI's request; sampling options are accepted and left to the agent's model."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"model": "docs", "messages": [{"role": "user", "content": "Hi!"}]}]
        }
    )

    model: Name
    messages: Annotated[list[ChatMessageIn], Field(min_length=1, max_length=500)]
    stream: bool = False
    user: str | None = None


class ChatMessageOut(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: ChatMessageOut
    finish_reason: Literal["stop", "length"] = "stop"


class CompletionUsage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: CompletionUsage = Field(default_factory=CompletionUsage)
    keel_run_id: str | None = None


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    finish_reason: Literal["stop", "length"] | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]


class ModelInfo(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "keel"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelInfo]


class BudgetCounters(BaseModel):
    """An amount of each budget counter (tokens, US dollars, calls, seconds)."""

    input_tokens: float = 0.0
    output_tokens: float = 0.0
    total_tokens: float = 0.0
    cost_usd: float = 0.0
    model_calls: float = 0.0
    tool_calls: float = 0.0
    wall_time_s: float = 0.0


class BudgetStatus(BaseModel):
    """The calling tenant's budget for the current UTC day: spend, reservations, limits."""

    tenant: str
    day: str = Field(description="UTC date the counters are for (they reset at midnight UTC)")
    scope: str = Field(description="the ledger key, e.g. tenant:acme@2026-11-24")
    metered: bool = Field(description="false when this service does not meter runs")
    used: BudgetCounters
    reserved: BudgetCounters = Field(description="held by calls in progress")
    limits: dict[str, float] = Field(description="limited counters and their bounds")
    remaining: dict[str, float] = Field(description="per limited counter: limit - used - reserved")
