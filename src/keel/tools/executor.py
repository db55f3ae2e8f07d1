"""One tool call, contained: validate, inject secrets, respect the breaker, the rate limit and the
concurrency cap, run with a timeout, retry what is retryable, serialise, redact and truncate.

Nothing here raises to the caller: every failure becomes a ``ToolResult`` whose ``error`` is a
``ToolFailure`` dict. The one exception is a ``tool_gate`` (``keel.budget`` sets one) that refuses
a call: its error (e.g. ``BudgetExceeded``) ends the run instead of going back to the model.
Sync handlers run in a dedicated thread pool, so a hung sync tool cannot starve the event loop's
default executor (its thread is abandoned, not killed: Python cannot kill a thread).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import hashlib
import inspect
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Generator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pydantic_core
from pydantic import BaseModel, ValidationError

from keel.errors import KeelError, RetryableToolError, SecretNotFoundError
from keel.llm.messages import ToolCallPart
from keel.tools.base import Tool, ToolFailure, ToolResult
from keel.tools.resilience import RateLimitBackend, ToolPolicy
from keel.tools.secrets import Redactor, SecretProvider

__all__ = ["CallSettings", "ToolGate", "execute", "tool_gate"]

log = logging.getLogger("keel.tools")
_POOL = ThreadPoolExecutor(max_workers=32, thread_name_prefix="keel-tool")
_DEFAULT_POLICY = ToolPolicy()

ToolGate = Callable[[Tool, ToolCallPart], Awaitable[Callable[[ToolResult], Awaitable[None]]]]
"""Called before a tool runs; may raise to refuse it; returns what to call with the result."""

tool_gate: contextvars.ContextVar[ToolGate | None] = contextvars.ContextVar(
    "keel_tool_gate", default=None
)
"""The gate every tool call in this context passes (``keel.budget`` sets it for a run)."""


@dataclass
class CallSettings:
    """Registry-wide defaults and shared state a call needs."""

    secrets: SecretProvider | None
    redactor: Redactor
    default_timeout: float | None
    max_result_chars: int
    rng: random.Random
    rate_limits: RateLimitBackend | None = None
    """Where every rate-limited tool's bucket lives (e.g. Redis, shared by processes); None:
    each tool's own ``policy.limiter``."""


class _Failed(Exception):
    def __init__(self, failure: ToolFailure, attempts: int = 1) -> None:
        self.failure = failure
        self.attempts = attempts


async def execute(tool: Tool, call: ToolCallPart, settings: CallSettings) -> ToolResult:
    """Run ``call`` against ``tool``; every failure comes back as a structured error."""
    gate = tool_gate.get()
    if gate is None:
        return await _execute(tool, call, settings)
    done = await gate(tool, call)
    result = await _execute(tool, call, settings)
    await done(result)
    return result


async def _execute(tool: Tool, call: ToolCallPart, settings: CallSettings) -> ToolResult:
    start = time.perf_counter()
    try:
        kwargs = _validate(tool, call.arguments)
        credential = ""
        if tool.secret_parameters:
            credential = await _inject_secrets(tool, kwargs, settings)
        policy: ToolPolicy = tool.policy if tool.policy is not None else _DEFAULT_POLICY
        value, attempts = await _run(tool, policy, kwargs, settings, credential)
        text, changed, truncated = _render(tool, value, policy, settings)
    except _Failed as e:
        failure = e.failure
        if settings.redactor:
            redact = settings.redactor.redact
            hint = None if failure.hint is None else redact(failure.hint)
            failure = failure.model_copy(update={"message": redact(failure.message), "hint": hint})
        return ToolResult(
            call.id,
            call.name,
            error=failure.as_dict(),
            duration_s=time.perf_counter() - start,
            attempts=e.attempts,
        )
    return ToolResult(
        call.id,
        call.name,
        value=text if changed else value,
        duration_s=time.perf_counter() - start,
        text=text,
        attempts=attempts,
        truncated=truncated,
    )


def _validate(tool: Tool, arguments: dict[str, Any]) -> dict[str, Any]:
    try:
        parsed = tool.arguments.model_validate(arguments)
    except ValidationError as e:
        raise _Failed(
            ToolFailure(
                kind="invalid_arguments",
                message=_describe(e),
                hint="fix the arguments to match the tool's schema and call it again",
            )
        ) from None
    kwargs = {name: getattr(parsed, name) for name in type(parsed).model_fields}
    if parsed.model_extra:  # schema-only tools (MCP) validate with JSON Schema and keep extras
        kwargs.update(parsed.model_extra)
    return kwargs


async def _inject_secrets(tool: Tool, kwargs: dict[str, Any], settings: CallSettings) -> str:
    """Fill in the secret parameters; returns a fingerprint of the values (a rate-limit key)."""
    if settings.secrets is None:
        raise _Failed(
            ToolFailure(
                kind="secret_unavailable",
                message=f"{tool.name} needs secrets but no secret provider is configured",
                hint="the operator must pass ToolRegistry(secrets=...)",
            )
        )
    digest = hashlib.sha256()
    for parameter, name in tool.secret_parameters:
        try:
            value = await asyncio.to_thread(settings.secrets.get, name)
        except SecretNotFoundError as e:
            raise _Failed(
                ToolFailure(kind="secret_unavailable", message=e.message, hint=e.hint)
            ) from None
        except Exception as e:  # a broken provider: name the error type, never its text
            raise _Failed(
                ToolFailure(
                    kind="secret_unavailable",
                    message=f"the secret provider failed to give {name!r} ({type(e).__name__})",
                    retryable=True,
                )
            ) from None
        settings.redactor.add(name, value)
        kwargs[parameter] = value
        digest.update(value.encode() + b"\0")
    return digest.hexdigest()[:16]


async def _run(
    tool: Tool, policy: ToolPolicy, kwargs: dict[str, Any], settings: CallSettings, credential: str
) -> tuple[Any, int]:
    breaker = policy.breaker
    if breaker is not None and not breaker.allow():
        raise _Failed(
            ToolFailure(
                kind="circuit_open",
                message=f"{tool.name} failed {breaker.failures} times in a row and is paused",
                retryable=True,
                hint=f"try again in {breaker.retry_in():.0f} s, or use another tool",
            )
        )
    retry = policy.retry
    timeout = tool.timeout if tool.timeout is not None else settings.default_timeout
    attempt = 0
    while True:
        attempt += 1
        try:
            await _take_token(tool, policy, credential, settings.rate_limits)
            value = await _attempt(tool, policy, kwargs, timeout)
        except _Failed:
            raise
        except (Exception, SystemExit) as e:  # a tool calling sys.exit() must not end the run
            failure, retry_after = _classify(tool, policy, e, timeout)
            if failure.retryable and attempt < retry.attempts:
                delay = max(retry.delay(attempt, settings.rng), retry_after)
                log.info(
                    "tool %s attempt %d/%d failed (%s), retrying in %.2f s",
                    tool.name,
                    attempt,
                    retry.attempts,
                    settings.redactor.redact(failure.message),
                    delay,
                )
                await asyncio.sleep(delay)
                continue
            if breaker is not None:
                breaker.record(False)
            raise _Failed(failure, attempt) from None
        if breaker is not None:
            breaker.record(True)
        return value, attempt


async def _take_token(
    tool: Tool, policy: ToolPolicy, credential: str, shared: RateLimitBackend | None
) -> None:
    limit = policy.rate_limit
    limiter = shared if shared is not None else policy.limiter
    if limit is None or limiter is None:
        return
    key = policy.key or tool.ref
    if limit.per_credential and credential:
        key = f"{key}#{credential}"
    try:
        granted, wait = await limiter.reserve(key, limit)
    except Exception as e:  # a shared limiter that is down must not stop every tool: fail open
        log.warning("rate limiter for %s unavailable (%s); calling without it", tool.name, e)
        return
    if not granted:
        raise _Failed(
            ToolFailure(
                kind="rate_limited",
                message=f"{tool.name} is rate limited to {limit.rate:g} calls/s",
                retryable=True,
                hint=f"wait {wait:.1f} s before calling it again",
            )
        )
    if wait > 0:
        await asyncio.sleep(wait)


async def _attempt(
    tool: Tool, policy: ToolPolicy, kwargs: dict[str, Any], seconds: float | None
) -> Any:
    semaphore = policy.semaphore
    if semaphore is not None:
        async with semaphore:
            return await _invoke(tool, kwargs, seconds)
    return await _invoke(tool, kwargs, seconds)


async def _invoke(tool: Tool, kwargs: dict[str, Any], seconds: float | None) -> Any:
    if inspect.iscoroutinefunction(tool.handler):
        # Run the coroutine's first step now: a tool that answers without waiting (most
        # in-process tools) then costs no timer. One that waits is resumed under the timeout.
        coroutine = tool.handler(**kwargs)
        try:
            pending = coroutine.send(None)
        except StopIteration as done:
            return done.value
        async with asyncio.timeout(seconds):
            return await _Resume(coroutine, pending)
    async with asyncio.timeout(seconds):
        context = contextvars.copy_context()
        job = functools.partial(context.run, tool.handler, **kwargs)
        value = await asyncio.get_running_loop().run_in_executor(_POOL, job)
        if inspect.isawaitable(value):  # an async callable that is not a coroutine function
            value = await value
        return value


class _Resume:
    """Awaits the rest of a coroutine that already ran its first step (what 3.12's eager
    tasks do): whatever it was waiting on is handed to the event loop unchanged."""

    __slots__ = ("coroutine", "pending")

    def __init__(self, coroutine: Any, pending: Any) -> None:
        self.coroutine = coroutine
        self.pending = pending

    def __await__(self) -> Generator[Any, Any, Any]:
        coroutine, pending = self.coroutine, self.pending
        while True:
            try:
                sent = yield pending
            except GeneratorExit:
                coroutine.close()
                raise
            except BaseException as error:  # cancellation (the timeout) goes into the tool
                try:
                    pending = coroutine.throw(error)
                except StopIteration as done:
                    return done.value
            else:
                try:
                    pending = coroutine.send(sent)
                except StopIteration as done:
                    return done.value


def _classify(
    tool: Tool, policy: ToolPolicy, error: BaseException, timeout: float | None
) -> tuple[ToolFailure, float]:
    if isinstance(error, TimeoutError):
        return (
            ToolFailure(
                kind="timeout",
                message=f"{tool.name} did not finish within {timeout} s",
                retryable=policy.retry.retry_timeouts,
                hint="try narrower arguments, or a different tool",
            ),
            0.0,
        )
    retryable = isinstance(error, (RetryableToolError, *policy.retry.retry_on))
    hint = error.hint if isinstance(error, KeelError) else None
    # A KeelError's message was written for the reader; other exceptions need their type.
    message = error.message if isinstance(error, KeelError) else f"{type(error).__name__}: {error}"
    retry_after = error.retry_after if isinstance(error, RetryableToolError) else None
    return (
        ToolFailure(
            kind="tool_error",
            message=message,
            retryable=retryable,
            hint=hint,
        ),
        retry_after or 0.0,
    )


def _render(
    tool: Tool, value: Any, policy: ToolPolicy, settings: CallSettings
) -> tuple[str, bool, bool]:
    """The text the model sees; whether it differs from the value; whether it was cut."""
    text = _serialise(tool, value)
    changed = truncated = False
    if settings.redactor:
        redacted = settings.redactor.redact(text)
        changed = redacted != text
        text = redacted
    limit = policy.max_result_chars or settings.max_result_chars
    if len(text) > limit:
        size = len(text)
        text = (
            f"{text[:limit]}\n[truncated by keel: the result had {size:,} characters, "
            f"only the first {limit:,} are shown; ask for less, e.g. a narrower query]"
        )
        changed = truncated = True
    return text, changed, truncated


def _serialise(tool: Tool, value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        pass
    try:
        return pydantic_core.to_json(value).decode()
    except (pydantic_core.PydanticSerializationError, UnicodeDecodeError, ValueError):
        raise _Failed(
            ToolFailure(
                kind="unserialisable_result",
                message=f"{tool.name} returned a {type(value).__name__}, which is not JSON",
                hint="the tool's author must return text, numbers, lists, dicts or a model",
            )
        ) from None


def _describe(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}" for e in error.errors()
    )
