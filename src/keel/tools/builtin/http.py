"""``http_get``: fetch a URL from an allow-list of hosts, with size and time limits.

Only ``http`` and ``https``; every redirect is checked against the same allow-list (a redirect is
how an allowed host would otherwise lead the tool anywhere); the body is read up to ``max_bytes``
and cut there with a note. Uses the standard library, so it needs no extra.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterable
from http.client import HTTPMessage
from typing import IO, Any
from urllib.parse import urlsplit

from keel.errors import RetryableToolError, ToolExecutionError
from keel.tools.registry import ToolRegistry

__all__ = ["HostAllowList", "http_tools"]


class HostAllowList:
    """Host names a tool may reach: exact names, or ``*.example.com`` for its subdomains."""

    def __init__(self, hosts: Iterable[str]) -> None:
        self.exact = {h.lower() for h in hosts if not h.startswith("*.")}
        self.suffixes = tuple(h[1:].lower() for h in hosts if h.startswith("*."))
        if not self.exact and not self.suffixes:
            raise ValueError("the allow-list is empty: name at least one host")

    def allows(self, host: str | None) -> bool:
        if not host:
            return False
        host = host.lower().rstrip(".")
        return host in self.exact or host.endswith(self.suffixes)

    def check(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise ToolExecutionError(
                f"only http and https URLs can be fetched, not {parts.scheme or 'no scheme'}"
            )
        if parts.username or parts.password:
            raise ToolExecutionError("URLs with credentials are not allowed")
        if not self.allows(parts.hostname):
            allowed = sorted(self.exact) + [f"*{s}" for s in self.suffixes]
            raise ToolExecutionError(
                f"host {parts.hostname!r} is not on the allow-list",
                hint=f"allowed hosts: {', '.join(allowed)}",
            )


class _CheckedRedirects(urllib.request.HTTPRedirectHandler):
    max_redirections = 3

    def __init__(self, allow: HostAllowList) -> None:
        self.allow = allow

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        self.allow.check(newurl)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def http_tools(
    allowed_hosts: Iterable[str],
    *,
    max_bytes: int = 200_000,
    timeout: float = 10.0,
    use_env_proxies: bool = True,
) -> ToolRegistry:
    """A registry with ``http_get`` limited to ``allowed_hosts``, ``max_bytes`` and ``timeout``."""
    allow = HostAllowList(allowed_hosts)
    handlers: list[Any] = [_CheckedRedirects(allow)]
    if not use_env_proxies:
        handlers.append(urllib.request.ProxyHandler({}))
    opener = urllib.request.build_opener(*handlers)
    registry = ToolRegistry()

    @registry.tool(effects="sends_outside", timeout=timeout + 1.0)
    def http_get(url: str) -> dict[str, Any]:
        """Fetch a web page or API response with HTTP GET.

        Args:
            url: The full URL, e.g. "https://example.com/page". Only allowed hosts work.
        """
        allow.check(url)
        request = urllib.request.Request(url, headers={"User-Agent": "keel-http-get"})
        try:
            with opener.open(request, timeout=timeout) as response:
                body = response.read(max_bytes + 1)
                status, final_url = response.status, response.url
                content_type = response.headers.get("Content-Type", "")
        except urllib.error.HTTPError as e:
            if e.code in (429, 502, 503, 504):
                raise RetryableToolError(f"HTTP {e.code} from {url}") from None
            raise ToolExecutionError(f"HTTP {e.code} {e.reason} from {url}") from None
        except urllib.error.URLError as e:
            if isinstance(e.reason, ToolExecutionError):
                raise e.reason from None
            raise RetryableToolError(f"cannot reach {url}: {e.reason}") from None
        except TimeoutError:
            raise RetryableToolError(f"{url} did not answer within {timeout} s") from None
        truncated = len(body) > max_bytes
        charset = "utf-8"
        if "charset=" in content_type:
            charset = content_type.split("charset=")[-1].split(";")[0].strip() or "utf-8"
        try:
            text = body[:max_bytes].decode(charset, errors="replace")
        except LookupError:
            text = body[:max_bytes].decode("utf-8", errors="replace")
        return {
            "status": status,
            "url": final_url,
            "content_type": content_type,
            "text": text,
            "truncated": truncated,
        }

    return registry
