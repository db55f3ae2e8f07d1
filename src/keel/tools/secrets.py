"""Secrets for tools: where their values come from, how a tool asks for one, how they are hidden.

A tool declares a parameter as ``Annotated[str, Secret("GITHUB_TOKEN")]``: the parameter is left
out of the JSON schema the model sees, and the registry fills it in at call time from its
``SecretProvider``. Every value handed out is remembered by a ``Redactor``, which replaces it in
results, error messages, span attributes and log records.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from keel.errors import SecretNotFoundError
from keel.observe.content import register_redactor

__all__ = [
    "CachedSecretProvider",
    "ChainSecretProvider",
    "EnvSecretProvider",
    "FileSecretProvider",
    "RedactingFilter",
    "Redactor",
    "Secret",
    "SecretProvider",
]

_SECRET_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,127}$")
MIN_REDACTED_LENGTH = 4


@dataclass(frozen=True)
class Secret:
    """Marks a tool parameter as a secret to inject: ``Annotated[str, Secret("NAME")]``."""

    name: str

    def __post_init__(self) -> None:
        _check_name(self.name)


def _check_name(name: str) -> None:
    if not _SECRET_NAME.match(name):
        raise ValueError(f"secret name {name!r}: use letters, digits, '_', '-' or '.'")


@runtime_checkable
class SecretProvider(Protocol):
    """Gives the value of a secret by name; raises ``SecretNotFoundError`` when it has none."""

    def get(self, name: str) -> str: ...


class EnvSecretProvider:
    """Secrets from environment variables, ``prefix + name`` (e.g. ``KEEL_SECRET_GITHUB_TOKEN``)."""

    def __init__(self, prefix: str = "", environ: dict[str, str] | None = None) -> None:
        self.prefix = prefix
        self._environ = environ

    def get(self, name: str) -> str:
        _check_name(name)
        environ = self._environ if self._environ is not None else os.environ
        value = environ.get(self.prefix + name)
        if not value:
            raise SecretNotFoundError(
                f"secret {name!r} is not set",
                hint=f"set the environment variable {self.prefix + name}",
            )
        return value


class FileSecretProvider:
    """Secrets as files in a directory, one per name (Docker and Kubernetes secret mounts).

    A trailing newline is stripped; names cannot contain path separators, so a name never
    reads outside the directory.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def get(self, name: str) -> str:
        _check_name(name)
        if name in (".", "..") or "/" in name:
            raise SecretNotFoundError(f"secret name {name!r} is not a plain file name")
        path = self.directory / name
        try:
            value = path.read_text().rstrip("\r\n")
        except FileNotFoundError:
            raise SecretNotFoundError(
                f"secret {name!r} is not in {self.directory}",
                hint=f"create the file {path}",
            ) from None
        except OSError as e:
            raise SecretNotFoundError(f"secret {name!r} cannot be read: {e.strerror}") from None
        if not value:
            raise SecretNotFoundError(f"secret file {path} is empty")
        return value


class ChainSecretProvider:
    """Asks each provider in turn; the first that has the secret wins."""

    def __init__(self, *providers: SecretProvider) -> None:
        if not providers:
            raise ValueError("ChainSecretProvider needs at least one provider")
        self.providers = providers

    def get(self, name: str) -> str:
        for provider in self.providers:
            try:
                return provider.get(name)
            except SecretNotFoundError:
                continue
        raise SecretNotFoundError(
            f"secret {name!r} is in none of {len(self.providers)} providers",
            hint="set it in one of the configured providers",
        )


class Redactor:
    """Remembers secret values and replaces them with ``[secret NAME]`` in any text.

    Values shorter than four characters are not remembered: replacing them would mangle text
    without protecting anything.
    """

    def __init__(self) -> None:
        self._values: dict[str, str] = {}
        self._pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()
        # Span content captured by keel.observe is scrubbed of what this redactor knows, too.
        register_redactor(self)

    def add(self, name: str, value: str) -> None:
        if len(value) < MIN_REDACTED_LENGTH or self._values.get(value) == name:
            return
        with self._lock:
            self._values[value] = name
            ordered = sorted(self._values, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(v) for v in ordered))

    def __bool__(self) -> bool:
        return self._pattern is not None

    def redact(self, text: str) -> str:
        pattern = self._pattern
        if pattern is None:
            return text
        return pattern.sub(lambda m: f"[secret {self._values[m.group(0)]}]", text)

    def redact_any(self, value: Any) -> Any:
        """Redact inside strings, lists, tuples and dict values (for log record arguments)."""
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, list | tuple):
            return type(value)(self.redact_any(v) for v in value)
        if isinstance(value, dict):
            return {k: self.redact_any(v) for k, v in value.items()}
        return value


class RedactingFilter(logging.Filter):
    """A logging filter that redacts known secret values from every record it sees.

    ``ToolRegistry`` installs one on the ``keel`` logger; add it to your own handlers too.
    """

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        if self.redactor:
            record.msg = self.redactor.redact(str(record.msg))
            if record.args:
                record.args = self.redactor.redact_any(record.args)
            if record.exc_info and record.exc_info[1] is not None:
                record.exc_text = self.redactor.redact(
                    logging.Formatter().formatException(record.exc_info)
                )
                record.exc_info = None
        return True


class CachedSecretProvider:
    """Keeps values from a slow provider (Vault) for ``ttl`` seconds."""

    def __init__(self, provider: SecretProvider, ttl: float = 300.0) -> None:
        self.provider = provider
        self.ttl = ttl
        self._cache: dict[str, tuple[float, str]] = {}

    def get(self, name: str) -> str:
        hit = self._cache.get(name)
        now = time.monotonic()
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        value = self.provider.get(name)
        self._cache[name] = (now, value)
        return value
