"""Typed errors for every layer of Keel.

Every error carries a one-line message a user can act on, and optionally a ``hint`` that says how
to fix it. Messages never contain secrets: callers pass names and paths, never credentials.
"""

from __future__ import annotations

__all__ = [
    "AgentError",
    "ConfigError",
    "DocumentError",
    "EmptyCorpusError",
    "GraphDefinitionError",
    "GraphError",
    "GraphStepLimitError",
    "KeelError",
    "MissingDependencyError",
    "ModelError",
    "ModelNotFoundError",
    "ModelRequestError",
    "NodeError",
    "OutputValidationError",
    "RunNotFoundError",
    "StepLimitError",
    "StoreError",
    "ToolArgumentsError",
    "ToolError",
    "ToolExecutionError",
    "ToolNotFoundError",
    "UnexpectedModelBehavior",
    "RetryableToolError",
    "SecretNotFoundError",
    "ToolsLockError",
    "SandboxError",
    "SandboxInputError",
    "SandboxUnavailableError",
    "ModelUnavailableError",
    "RateLimitError",
    "ModelTimeoutError",
    "CircuitOpenError",
    "DeadlineExceededError",
    "AllModelsFailedError",
    "ContextOverflowError",
    "SkillNotFoundError",
    "PolicyError",
    "ServeError",
    "AuthError",
    "AgentNotFoundError",
    "DatasetError",
    "RecordingNotFoundError",
    "ReplayDivergenceError",
    "EmbeddingDimensionError",
    "BudgetExceeded",
]


class KeelError(Exception):
    """Base class of every error Keel raises on purpose."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if self.hint is None else f"{self.message} ({self.hint})"


class ConfigError(KeelError):
    """The configuration (``keel.toml``, ``KEEL_*`` variables or code) is invalid."""


class MissingDependencyError(KeelError):
    """An optional backend was asked for, but the library it needs is not installed."""

    def __init__(self, package: str, extra: str, *, feature: str) -> None:
        super().__init__(
            f"{feature} needs the '{package}' package, which is not installed",
            hint=f"install it with: pip install 'keel[{extra}]'",
        )
        self.package = package
        self.extra = extra


class ModelError(KeelError):
    """A language model could not be loaded or did not answer."""


class ModelNotFoundError(ModelError):
    """A model name or weights file does not exist."""


class ModelRequestError(ModelError):
    """The model runtime rejected or failed a request."""


class UnexpectedModelBehavior(ModelError):
    """The model answered, but not in a way Keel can use (e.g. a test script ran out)."""


class OutputValidationError(ModelError):
    """Structured output still failed validation after the allowed number of retries."""


class ToolError(KeelError):
    """Base class of tool registry and tool call errors."""


class ToolNotFoundError(ToolError):
    """No tool with that name is registered."""


class ToolArgumentsError(ToolError):
    """Arguments for a tool call failed validation against the tool's schema."""


class ToolExecutionError(ToolError):
    """A tool handler raised; the original exception is the ``__cause__``."""


class StoreError(KeelError):
    """A memory, trace or other store could not be opened, read or written."""


class DocumentError(KeelError):
    """A document path is missing, unreadable or of an unsupported kind."""


class EmptyCorpusError(DocumentError):
    """A document path holds no readable text to ingest."""


class AgentError(KeelError):
    """An agent run could not complete."""


class StepLimitError(AgentError):
    """An agent used its step budget without reaching a final answer."""


class GraphError(KeelError):
    """A graph run was given bad input or state, or could not continue."""


class GraphDefinitionError(GraphError):
    """A graph is malformed: unknown node in an edge, no entry point, a duplicate name."""


class GraphStepLimitError(StepLimitError, GraphError):
    """A graph run reached its ``max_steps`` without finishing."""


class NodeError(GraphError):
    """A node raised after its retries and has no fallback; the exception is the ``__cause__``."""


class RunNotFoundError(GraphError):
    """No checkpoint exists for the run id to resume."""


class RetryableToolError(ToolExecutionError):
    """A tool failed in a way that may pass if tried again (a 503, a dropped connection).

    Raise it from a tool handler; the registry retries it with backoff. ``retry_after`` (seconds)
    is a lower bound on the wait when the remote side said how long to wait.
    """

    def __init__(
        self, message: str, *, hint: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.retry_after = retry_after


class SecretNotFoundError(KeelError):
    """A secret a tool needs is not available from the configured provider (names only)."""


class ToolsLockError(ToolError):
    """The tool registry does not match the committed lock file (a schema changed, no bump)."""


class SandboxError(KeelError):
    """Sandboxed code execution could not be set up or run (not: the code itself failed)."""


class SandboxUnavailableError(SandboxError):
    """The sandbox backend cannot run on this machine (e.g. bubblewrap is not installed)."""


class SandboxInputError(SandboxError):
    """A sandbox run was given invalid input (a file name outside the workspace, bad limits)."""


class ModelUnavailableError(ModelRequestError):
    """The model endpoint could not answer now (5xx, dropped connection, malformed or cut-off
    reply); the same request may pass if tried again or sent to another model.

    ``status`` is the HTTP status when there was one; ``retry_after`` (seconds) is the wait the
    server asked for, if it said.
    """

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.retry_after = retry_after


class RateLimitError(ModelUnavailableError):
    """The provider refused the call for now (HTTP 429); ``retry_after`` says when to come back."""


class ModelTimeoutError(ModelUnavailableError):
    """A model call took longer than its timeout and was abandoned."""


class CircuitOpenError(ModelUnavailableError):
    """A model's circuit breaker is open after repeated failures, so it was not called."""


class DeadlineExceededError(ModelError):
    """The overall deadline of a piece of work passed; no further model call is attempted."""


class AllModelsFailedError(ModelUnavailableError):
    """Every model of a fallback chain failed; ``errors`` holds each model's error in order."""

    def __init__(self, message: str, *, errors: list[BaseException]) -> None:
        super().__init__(message, hint="check each model's endpoint, or add another fallback")
        self.errors = errors


class ContextOverflowError(KeelError):
    """What must go into a prompt (system prompt, plan, the current request) cannot fit the
    model's context window, even after history, memory and tool results were cut."""


class SkillNotFoundError(StoreError):
    """No skill of that name (or no such version of it) is in procedural memory."""


class DatasetError(KeelError):
    """An eval dataset file is missing, unreadable or invalid (the message names the file and
    the location in it)."""


class RecordingNotFoundError(StoreError):
    """No recorded run with that id (or id prefix) is in the recordings file."""


class ReplayDivergenceError(KeelError):
    """A replayed run asked for something other than what was recorded at some step, so the
    recording cannot answer it; the message names the step and what differs."""

    def __init__(self, message: str, *, step: int, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.step = step


class PolicyError(ConfigError):
    """A guard policy file is missing or invalid (the message names the file, line and key)."""


class ServeError(KeelError):
    """A request to the Keel service cannot be served (the message says why)."""


class AuthError(ServeError):
    """An API key is missing, unknown or revoked."""


class AgentNotFoundError(ServeError):
    """The service exposes no agent of that name."""


class BudgetExceeded(KeelError):
    """A call would take a budget past one of its limits, so it was not made.

    ``scope`` is the budget's key (``run:r1``, ``tenant:acme@2026-11-24``), ``limit`` the counter
    (``total_tokens``, ``cost_usd``, ...), ``used`` what was used or reserved, ``maximum`` the
    limit and ``requested`` what the call needed. A graph run stopped by it sets ``run_id``,
    ``state`` (the state of the last completed step, also checkpointed) and ``steps``, so the
    partial result can be read and the run resumed with a larger budget.
    ``Agent.run`` sets ``state`` to the ``AgentResult`` of what it did so far.
    """

    def __init__(
        self,
        message: str,
        *,
        scope: str,
        limit: str,
        used: float,
        maximum: float,
        requested: float,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.scope = scope
        self.limit = limit
        self.used = used
        self.maximum = maximum
        self.requested = requested
        self.run_id: str | None = None
        self.state: object = None
        self.steps: int | None = None


class EmbeddingDimensionError(ModelError):
    """An embedding model returned vectors of another length than configured or than the store
    holds: the model, its ``dimension`` setting, or the store it writes to must change."""


class CacheError(StoreError):
    """The response cache (``keel.cache``) could not be opened, read or written."""


__all__ += ["CacheError"]


class ExecutorError(KeelError):
    """A batch executor (``keel.distributed``) could not start, connect or run a task."""


class TaskFailedError(ExecutorError):
    """One item of an executor's batch failed; ``ItemResult.unwrap()`` raises it."""


__all__ += ["ExecutorError", "TaskFailedError"]
