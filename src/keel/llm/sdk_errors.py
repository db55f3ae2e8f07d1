"""Typed Keel errors from the failures of the official ``openai`` and ``anthropic`` SDKs.

Both SDKs share one error hierarchy (``RateLimitError``, ``APITimeoutError``,
``APIConnectionError``, ``APIStatusError``, ``APIResponseValidationError``) over the ``httpx2``
transport, so one mapping serves both: retryable failures become ``ModelUnavailableError`` or
its subclasses, rejected requests ``ModelRequestError``. The provider's API key is redacted from
any message that would carry it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import ModuleType
from typing import Any

import httpx2
from pydantic import ValidationError

from keel.errors import (
    ModelRequestError,
    ModelTimeoutError,
    ModelUnavailableError,
    RateLimitError,
)
from keel.llm.provider import Provider

__all__ = ["map_sdk_error", "parse_retry_after"]

_RETRYABLE_STATUS = frozenset({408, 409, 425})


def parse_retry_after(headers: Any) -> float | None:
    """Seconds from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date), if any."""
    if headers is None:
        return None
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError):
        return None


def _redact(text: str, secret: str | None) -> str:
    return text.replace(secret, "***") if secret else text


def map_sdk_error(error: Exception, provider: Provider, sdk: ModuleType) -> Exception:
    """The typed Keel error for a failure of ``sdk`` (the ``openai`` or ``anthropic`` module)."""
    where = provider.name
    key = provider.resolve_api_key()
    if isinstance(error, sdk.RateLimitError):
        return RateLimitError(
            f"{where} rate-limited the request (HTTP 429)",
            status=429,
            retry_after=parse_retry_after(error.response.headers),
        )
    if isinstance(error, sdk.APITimeoutError):
        return ModelTimeoutError(f"{where} did not answer in time")
    if isinstance(error, sdk.APIConnectionError):
        cause = type(error.__cause__).__name__ if error.__cause__ else "connection error"
        return ModelUnavailableError(f"the connection to {where} failed ({cause})")
    if isinstance(error, sdk.APIStatusError):
        status: int = error.status_code
        if status in (401, 403):
            hint = f"check {provider.api_key_env}" if provider.api_key_env else None
            return ModelRequestError(f"{where} refused the credentials (HTTP {status})", hint=hint)
        detail = _redact(str(error.message), key)[:300]
        if status >= 500 or status in _RETRYABLE_STATUS:
            return ModelUnavailableError(
                f"{where} failed (HTTP {status}): {detail}",
                status=status,
                retry_after=parse_retry_after(error.response.headers),
            )
        return ModelRequestError(f"{where} rejected the request (HTTP {status}): {detail}")
    if isinstance(error, sdk.APIResponseValidationError | json.JSONDecodeError | ValidationError):
        return ModelUnavailableError(f"{where} sent a malformed reply ({type(error).__name__})")
    if isinstance(error, httpx2.TimeoutException):
        return ModelTimeoutError(f"{where} stopped sending in time")
    if isinstance(error, httpx2.TransportError | httpx2.StreamError):
        return ModelUnavailableError(f"the connection to {where} broke ({type(error).__name__})")
    base = getattr(sdk, "OpenAIError", None) or getattr(sdk, "AnthropicError", None)
    if base is not None and isinstance(error, base):
        return ModelRequestError(f"{where}: {_redact(str(error), key)[:300]}")
    return error
