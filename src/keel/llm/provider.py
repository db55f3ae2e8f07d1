"""Where a hosted or self-hosted model lives and how to reach it, apart from its wire format.

A ``Provider`` is an endpoint (base URL), the name of the environment variable that holds the API
key, extra headers and a timeout. One wire-format class (``OpenAIModel``) then serves OpenAI,
vLLM, TGI, Ollama, llama-server and Gemini by being handed a different provider. The key is read
from the environment when a client is built and is never part of a repr, a log or an error.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from keel.errors import ConfigError

__all__ = [
    "GEMINI_OPENAI_BASE_URL",
    "OLLAMA_BASE_URL",
    "Provider",
    "anthropic_provider",
    "compatible_provider",
    "gemini_provider",
    "ollama_provider",
    "openai_provider",
]

OLLAMA_BASE_URL = "http://localhost:11434/v1"
GEMINI_OPENAI_BASE_URL = "https://generativelanguage.googleapis.com/v1beta/openai/"


@dataclass(frozen=True)
class Provider:
    """An API endpoint and its credentials: ``base_url=None`` means the SDK's own default."""

    name: str
    base_url: str | None = None
    api_key_env: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    api_key: str | None = field(default=None, repr=False)
    timeout: float = 600.0
    key_required: bool = False
    max_tokens_param: str = "max_tokens"
    stream_usage: bool = True

    def resolve_api_key(self) -> str | None:
        """The key given in code, else the one in ``api_key_env``; None if neither is set."""
        if self.api_key:
            return self.api_key
        if self.api_key_env:
            return os.environ.get(self.api_key_env) or None
        return None

    def require_api_key(self) -> str | None:
        """Like ``resolve_api_key``, but a provider that needs a key fails clearly without one."""
        key = self.resolve_api_key()
        if key is None and self.key_required:
            raise ConfigError(
                f"no API key for {self.name}",
                hint=f"set the {self.api_key_env} environment variable",
            )
        return key


def openai_provider(*, api_key: str | None = None, base_url: str | None = None) -> Provider:
    """OpenAI's API; the key comes from ``OPENAI_API_KEY`` unless given."""
    return Provider(
        name="openai",
        base_url=base_url,
        api_key_env="OPENAI_API_KEY",
        api_key=api_key,
        key_required=True,
        max_tokens_param="max_completion_tokens",
    )


def compatible_provider(
    base_url: str,
    *,
    name: str = "openai-compatible",
    api_key_env: str | None = "OPENAI_COMPATIBLE_API_KEY",
    headers: Mapping[str, str] | None = None,
) -> Provider:
    """Any OpenAI-compatible server (vLLM, TGI, llama-server, LiteLLM) at ``base_url``.

    A key is optional: self-hosted servers often run without one.
    """
    if not base_url.startswith(("http://", "https://")):
        raise ConfigError(
            f"base URL must start with http:// or https://, got {base_url!r}",
            hint="e.g. 'vllm:http://localhost:8000/v1#my-model'",
        )
    return Provider(name=name, base_url=base_url, api_key_env=api_key_env, headers=headers or {})


def ollama_provider(base_url: str = OLLAMA_BASE_URL) -> Provider:
    """An Ollama server through its OpenAI-compatible ``/v1`` API."""
    return compatible_provider(base_url, name="ollama", api_key_env="OLLAMA_API_KEY")


def gemini_provider(*, api_key: str | None = None) -> Provider:
    """Google Gemini through its OpenAI-compatible endpoint; key from ``GEMINI_API_KEY``."""
    return Provider(
        name="gemini",
        base_url=GEMINI_OPENAI_BASE_URL,
        api_key_env="GEMINI_API_KEY",
        api_key=api_key,
        key_required=True,
    )


def anthropic_provider(*, api_key: str | None = None, base_url: str | None = None) -> Provider:
    """Anthropic's Messages API; the key comes from ``ANTHROPIC_API_KEY`` unless given."""
    return Provider(
        name="anthropic",
        base_url=base_url,
        api_key_env="ANTHROPIC_API_KEY",
        api_key=api_key,
        key_required=True,
    )
