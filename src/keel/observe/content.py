"""Opt-in capture of message content in spans, always redacted.

Prompts, replies and tool arguments may hold user data and secrets, and traces are kept, so
content is recorded only when capture is switched on (``trace.capture_content`` or
``set_capture_content(True)``). Whatever is captured first goes through every registered
redactor (``keel.tools.secrets.Redactor`` registers itself, so a secret a tool was handed is
scrubbed here too) and through patterns for well-known credential shapes, then is cut to a
bounded length. Standard library only: instrumented layers import this module for free.
"""

from __future__ import annotations

import json
import re
import threading
import weakref
from typing import Any, Protocol

__all__ = [
    "MAX_CAPTURED_CHARS",
    "TextRedactor",
    "capture_enabled",
    "captured",
    "redact",
    "register_redactor",
    "set_capture_content",
]

MAX_CAPTURED_CHARS = 8_000
"""Longest captured value; longer ones are cut and end with a marker."""

# Credential shapes worth scrubbing even when no redactor knows the value: API keys of the big
# providers, bearer tokens, AWS access key ids, private key blocks, and ``password=...`` pairs.
_PATTERNS: tuple[tuple[tuple[str, ...], re.Pattern[str], str], ...] = (
    # (lowercase substrings one of which must occur for the pattern to be tried, pattern, repl)
    (("sk-",), re.compile(r"\bsk-(?:ant-|proj-)?[A-Za-z0-9_\-]{16,}"), "[secret api-key]"),
    (
        ("ghp_", "gho_", "ghs_", "ghu_", "github_pat_"),
        re.compile(r"\b(?:ghp|gho|ghs|ghu|github_pat)_[A-Za-z0-9_]{20,}"),
        "[secret github-token]",
    ),
    (("akia",), re.compile(r"\bAKIA[0-9A-Z]{16}\b"), "[secret aws-key]"),
    (
        ("bearer",),
        re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/\-]{12,}=*"),
        "Bearer [secret token]",
    ),
    (
        ("private key",),
        re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.S),
        "[secret private-key]",
    ),
    (
        ("password", "passwd", "secret", "api_key", "api-key", "apikey", "token"),
        re.compile(r"(?i)\b(password|passwd|secret|api[_-]?key|token)(\s*[=:]\s*)[^\s,;\"']{4,}"),
        r"\1\2[secret]",
    ),
)


class TextRedactor(Protocol):
    """Anything that scrubs secrets from text, such as ``keel.tools.secrets.Redactor``."""

    def redact(self, text: str) -> str: ...


_lock = threading.Lock()
_redactors: weakref.WeakSet[Any] = weakref.WeakSet()
_capture = False


def set_capture_content(enabled: bool) -> None:
    """Switch content capture on or off for this process (off by default)."""
    global _capture
    _capture = bool(enabled)


def capture_enabled() -> bool:
    """Whether spans should record message content (checked before building it)."""
    return _capture


def register_redactor(redactor: TextRedactor) -> None:
    """Apply ``redactor`` to every captured value while it is alive (held weakly)."""
    with _lock:
        _redactors.add(redactor)


def redact(text: str) -> str:
    """``text`` with every secret a registered redactor knows, and credential shapes, replaced."""
    with _lock:
        redactors = list(_redactors)
    for r in redactors:
        text = r.redact(text)
    lower = text.lower()
    for triggers, pattern, replacement in _PATTERNS:
        if any(t in lower for t in triggers):  # a substring test is far cheaper than a regex
            text = pattern.sub(replacement, text)
    return text


def captured(value: Any) -> str | None:
    """``value`` as redacted, bounded text for a span attribute, or None when capture is off.

    Strings are taken as they are; anything else is serialised as JSON (unknown objects by
    ``str``). Redaction runs on the whole text before it is cut, so a cut never splits a secret
    into a part the patterns no longer see.
    """
    if not _capture:
        return None
    text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
    text = redact(text)
    if len(text) > MAX_CAPTURED_CHARS:
        text = text[:MAX_CAPTURED_CHARS] + "...[truncated]"
    return text
