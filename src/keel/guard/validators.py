"""Pluggable checks on an action before it runs, after schema and policy.

An ``ActionValidator`` looks at one tool call (its arguments and their labels) and either has no
objection (``None``) or returns a ``Verdict`` (ask or deny). The strictest verdict of the policy
and every validator wins. Validators may also clean the final text an agent hands to the user
(``sanitize``), where a markdown image to an attacker's host would leak data when rendered.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from keel.guard.policy import Verdict
from keel.llm.messages import Provenance, ToolCallPart

__all__ = ["ActionValidator", "UrlAllowList"]

_URL = re.compile(r"https?://[^\s)\]>\"'`]+", re.IGNORECASE)
_MARKDOWN_LINK = re.compile(r"(!?)\[([^\]]*)\]\(\s*(https?://[^)\s]+)[^)]*\)", re.IGNORECASE)


class ActionValidator(ABC):
    """A check on a tool call before it runs; ``None`` means no objection."""

    name: str = "validator"

    @abstractmethod
    async def validate(
        self, call: ToolCallPart, tool: Any, labels: Mapping[str, Provenance]
    ) -> Verdict | None: ...

    def sanitize(self, text: str) -> str:
        """The final answer, cleaned of what this validator forbids (unchanged by default)."""
        return text


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _strings(v)


class UrlAllowList(ActionValidator):
    """Denies a call with a URL whose host is not on the list, in the ``arguments`` named (all
    by default); ``sanitize`` removes markdown links and images to other hosts from answers.

    Hosts are exact names or ``*.example.com`` for subdomains.
    """

    name = "url-allow-list"

    def __init__(self, hosts: Iterable[str], *, arguments: Iterable[str] | None = None) -> None:
        self.exact = {h.lower() for h in hosts if not h.startswith("*.")}
        self.suffixes = tuple(h[1:].lower() for h in hosts if h.startswith("*."))
        self.arguments = None if arguments is None else frozenset(arguments)

    def allows(self, url: str) -> bool:
        host = (urlsplit(url).hostname or "").lower().rstrip(".")
        return bool(host) and (host in self.exact or host.endswith(self.suffixes))

    async def validate(
        self, call: ToolCallPart, tool: Any, labels: Mapping[str, Provenance]
    ) -> Verdict | None:
        for name, value in call.arguments.items():
            if self.arguments is not None and name not in self.arguments:
                continue
            for text in _strings(value):
                for url in _URL.findall(text):
                    if not self.allows(url):
                        host = urlsplit(url).hostname or "?"
                        return Verdict(
                            "deny",
                            self.name,
                            f"argument {name!r} holds a URL to {host}, which is not on the "
                            "allow-list",
                        )
        return None

    def sanitize(self, text: str) -> str:
        def replace(match: re.Match[str]) -> str:
            bang, _label, url = match.groups()
            if self.allows(url):
                return match.group(0)
            return f"[{'image' if bang else 'link'} removed: {urlsplit(url).hostname}]"

        return _MARKDOWN_LINK.sub(replace, text)
