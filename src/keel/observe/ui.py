"""``keel ui``: a local web viewer of the trace store, served on the loopback interface.

A threaded ``http.server`` from the standard library (no framework, no CDN: every asset is
served from this package), read-only over one ``TraceStore`` (SQLite or PostgreSQL). It listens
on 127.0.0.1 only and answers only requests addressed to it by a loopback host name, so a web
page elsewhere cannot reach it through DNS rebinding. Responses carry a strict
Content-Security-Policy.
"""

from __future__ import annotations

import json
import re
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from keel.errors import ConfigError, StoreError
from keel.observe.base import TraceStore
from keel.observe.export import to_json
from keel.observe.store import SQLiteTraceStore
from keel.observe.ui_pages import APP_CSS, APP_JS, list_page, not_found_page, trace_page

__all__ = ["TraceViewer", "serve"]

HOST = "127.0.0.1"
_TRACE_PATH = re.compile(r"^/trace/([0-9a-f]{6,32})$")
_TRACE_JSON = re.compile(r"^/api/trace/([0-9a-f]{6,32})\.json$")
_LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "[::1]"})
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; "
        "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
MAX_RUNS = 500


class TraceViewer:
    """The viewer's server over a trace store (or the SQLite file at a path), which it closes
    with itself: ``start()`` serves in a background thread (tests, embedding),
    ``serve_forever()`` in the calling thread (the CLI)."""

    def __init__(self, source: Path | TraceStore, *, port: int = 8765) -> None:
        if not 0 <= port <= 65535:
            if isinstance(source, TraceStore):
                source.close()
            raise ConfigError(f"port {port} is out of range", hint="use 1-65535, or 0 for any")
        self.store = source if isinstance(source, TraceStore) else SQLiteTraceStore(source)
        try:
            self._server = ThreadingHTTPServer((HOST, port), _handler(self.store))
        except OSError as e:
            self.store.close()
            raise ConfigError(
                f"cannot listen on {HOST}:{port}: {e.strerror or e}",
                hint="choose another port with --port",
            ) from e
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self._server.server_address[1]}/"

    def start(self) -> str:
        """Serve in a daemon thread; return the URL."""
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self.url

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def close(self) -> None:
        """Stop serving and close the store."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(5)
        self._server.server_close()
        self.store.close()


def serve(source: Path | TraceStore, port: int = 8765) -> TraceViewer:
    """A started viewer of a store, or of the SQLite file at a path (call ``close()`` when done)."""
    viewer = TraceViewer(source, port=port)
    viewer.start()
    return viewer


def _handler(store: TraceStore) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "keel-ui"
        sys_version = ""

        def log_message(self, format: str, *args: Any) -> None:
            pass  # requests are not logged: URLs may carry session ids

        def do_GET(self) -> None:
            host = (self.headers.get("Host") or "").rsplit(":", 1)[0].lower()
            if host not in _LOOPBACK_NAMES:
                self._send(HTTPStatus.MISDIRECTED_REQUEST, "text/plain", "unknown host\n")
                return
            url = urlsplit(self.path)
            try:
                self._route(url.path, parse_qs(url.query))
            except StoreError as e:
                self._send(HTTPStatus.NOT_FOUND, "text/html", not_found_page(e.message))

        def _route(self, path: str, query: dict[str, list[str]]) -> None:
            if path == "/":
                self._list(query)
            elif path == "/static/app.css":
                self._send(HTTPStatus.OK, "text/css", APP_CSS)
            elif path == "/static/app.js":
                self._send(HTTPStatus.OK, "text/javascript", APP_JS)
            elif m := _TRACE_PATH.match(path):
                self._send(HTTPStatus.OK, "text/html", trace_page(store.trace(m.group(1))))
            elif m := _TRACE_JSON.match(path):
                body = json.dumps(to_json([store.trace(m.group(1))]), ensure_ascii=False)
                self._send(HTTPStatus.OK, "application/json", body)
            elif path == "/favicon.ico":
                self._send(HTTPStatus.NO_CONTENT, "text/plain", "")
            else:
                self._send(HTTPStatus.NOT_FOUND, "text/html", not_found_page(f"no page {path}"))

        def _list(self, query: dict[str, list[str]]) -> None:
            def one(name: str) -> str:
                return (query.get(name) or [""])[0].strip()[:200]

            session, agent, search = one("session"), one("agent"), one("q")
            errors = one("errors") in ("1", "on", "true")
            try:
                limit = max(1, min(MAX_RUNS, int(one("limit") or 100)))
            except ValueError:
                limit = 100
            summaries = store.traces(
                limit,
                session=session or None,
                agent=agent or None,
                errors=errors,
                search=search or None,
            )
            page = list_page(
                summaries,
                session=session,
                agent=agent,
                errors=errors,
                search=search,
                store_path=store.location,
            )
            self._send(HTTPStatus.OK, "text/html", page)

        def _send(self, status: HTTPStatus, kind: str, body: str) -> None:
            data = body.encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", f"{kind}; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            for key, value in _HEADERS.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

    return Handler
