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
    "KeelError",
    "MissingDependencyError",
    "ModelError",
    "ModelNotFoundError",
    "ModelRequestError",
    "OutputValidationError",
    "StepLimitError",
    "StoreError",
    "ToolArgumentsError",
    "ToolError",
    "ToolExecutionError",
    "ToolNotFoundError",
    "UnexpectedModelBehavior",
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
