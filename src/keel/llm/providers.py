"""Model strings (``local:/path/model.gguf``, ``openai:gpt-4o``, ...) resolved to models.

Each prefix names a factory registered under the ``keel.models`` entry-point group, built-ins
included, so a plugin adds a provider the same way Keel adds its own. A factory takes the part
after the colon (may be empty) and the LLM settings. Backends are imported only when resolved.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from keel.errors import ConfigError, MissingDependencyError

if TYPE_CHECKING:
    from keel.config import LLMSettings
    from keel.llm.base import Model

__all__ = ["ModelFactory", "available_providers", "create_model"]

ModelFactory = Callable[[str, "LLMSettings"], "Model"]

_BUILTIN = {
    "local": "keel.llm.local:from_spec",
    "openai": "keel.llm.openai:openai_from_spec",
    "openai-compatible": "keel.llm.openai:compatible_from_spec",
    "vllm": "keel.llm.openai:compatible_from_spec",
    "ollama": "keel.llm.openai:ollama_from_spec",
    "gemini": "keel.llm.openai:gemini_from_spec",
    "anthropic": "keel.llm.anthropic:from_spec",
}


def available_providers() -> dict[str, str]:
    """Provider prefix -> ``module:factory`` for every installed provider, built-ins included."""
    found = dict(_BUILTIN)
    found.update({ep.name: ep.value for ep in entry_points(group="keel.models")})
    return found


def _load(target: str) -> ModelFactory:
    module_name, _, attr = target.partition(":")
    try:
        module = __import__(module_name, fromlist=[attr])
    except MissingDependencyError:
        raise
    except ImportError as e:
        raise ConfigError(f"cannot import model provider {target}: {e}") from None
    factory: ModelFactory = getattr(module, attr)
    return factory


def create_model(settings: LLMSettings, spec: str | None = None) -> Model:
    """Build the model named by ``spec`` (default: ``settings.model``)."""
    spec = spec or settings.model
    prefix, _, target = spec.partition(":")
    providers = available_providers()
    if prefix not in providers:
        raise ConfigError(
            f"unknown model provider {prefix!r} in {spec!r}; known: {', '.join(sorted(providers))}"
        )
    return _load(providers[prefix])(target, settings)
