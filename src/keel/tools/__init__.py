"""Tools: typed Python functions a model may call, versioned, validated and contained.

Names are imported on first use, so ``import keel.tools`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from keel._lazy import lazy_exports

if TYPE_CHECKING:
    from keel.tools.base import Effect, Tool, ToolFailure, ToolResult
    from keel.tools.registry import ToolRegistry
    from keel.tools.resilience import (
        CircuitBreaker,
        InProcessRateLimits,
        RateLimit,
        RateLimitBackend,
        RetryPolicy,
        ToolPolicy,
    )
    from keel.tools.secrets import (
        CachedSecretProvider,
        ChainSecretProvider,
        EnvSecretProvider,
        FileSecretProvider,
        RedactingFilter,
        Redactor,
        Secret,
        SecretProvider,
    )
    from keel.tools.vault import VaultSecretProvider

__all__ = [
    "CachedSecretProvider",
    "ChainSecretProvider",
    "CircuitBreaker",
    "Effect",
    "EnvSecretProvider",
    "FileSecretProvider",
    "InProcessRateLimits",
    "RateLimit",
    "RateLimitBackend",
    "RedactingFilter",
    "Redactor",
    "RetryPolicy",
    "Secret",
    "SecretProvider",
    "Tool",
    "ToolFailure",
    "ToolPolicy",
    "ToolRegistry",
    "ToolResult",
    "VaultSecretProvider",
]

_WHERE = {
    "CachedSecretProvider": "keel.tools.secrets",
    "InProcessRateLimits": "keel.tools.resilience",
    "RateLimitBackend": "keel.tools.resilience",
    "ChainSecretProvider": "keel.tools.secrets",
    "CircuitBreaker": "keel.tools.resilience",
    "Effect": "keel.tools.base",
    "EnvSecretProvider": "keel.tools.secrets",
    "FileSecretProvider": "keel.tools.secrets",
    "RateLimit": "keel.tools.resilience",
    "RedactingFilter": "keel.tools.secrets",
    "Redactor": "keel.tools.secrets",
    "RetryPolicy": "keel.tools.resilience",
    "Secret": "keel.tools.secrets",
    "SecretProvider": "keel.tools.secrets",
    "Tool": "keel.tools.base",
    "ToolFailure": "keel.tools.base",
    "ToolPolicy": "keel.tools.resilience",
    "ToolRegistry": "keel.tools.registry",
    "ToolResult": "keel.tools.base",
    "VaultSecretProvider": "keel.tools.vault",
}


__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
