"""A real HTTP server speaking OpenAI's ``POST /v1/embeddings``, for the hosted-embedder tests.

It runs in a thread on a loopback port (stdlib ``http.server``: nothing to install) and embeds
with whatever ``Embedder``-like ``embed_sync`` it is given, normally the real MiniLM model. Its
``mode`` makes it misbehave on purpose: ``"500"``, ``"401"``, ``"malformed"``, ``"not-json"``,
``"short"`` (one vector too few) or ``"truncate"`` (vectors cut to 10 dimensions). It records
each request's body and ``Authorization`` header.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class EmbeddingsServer:
    embed: Callable[[Sequence[str]], list[list[float]]]
    model: str = "minilm-over-http"
    mode: str = "ok"
    requests: list[dict[str, Any]] = field(default_factory=list)
    authorizations: list[str | None] = field(default_factory=list)
    url: str = ""

    def reply(self, body: dict[str, Any]) -> tuple[int, bytes]:
        """The status and body to send for a request ``body``."""
        if self.mode == "500":
            # A careless server echoing the credentials it was sent.
            return 500, json.dumps(
                {"error": {"message": f"backend down; got {self.authorizations[-1]}"}}
            ).encode()
        if self.mode == "401":
            return 401, json.dumps({"error": {"message": "invalid api key"}}).encode()
        if self.mode == "not-json":
            return 200, b"<html>proxy error</html>"
        if self.mode == "malformed":
            return 200, json.dumps({"object": "list", "results": []}).encode()
        if body.get("encoding_format") != "float":
            return 400, json.dumps({"error": {"message": "only float encoding"}}).encode()
        texts = body["input"]
        vectors = self.embed(texts)
        if self.mode == "short":
            vectors = vectors[:-1]
        if self.mode == "truncate":
            vectors = [v[:10] for v in vectors]
        data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
        data.reverse()  # servers need not answer in order: ``index`` says which is which
        tokens = sum(len(t.split()) for t in texts)
        return 200, json.dumps(
            {
                "object": "list",
                "model": self.model,
                "data": data,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        ).encode()


@contextmanager
def serve_embeddings(
    embed: Callable[[Sequence[str]], list[list[float]]],
) -> Iterator[EmbeddingsServer]:
    """Start the server; yields it with ``url`` set to its ``/v1`` base URL."""
    state = EmbeddingsServer(embed)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            if self.path != "/v1/embeddings":
                status, payload = 404, b'{"error": {"message": "not found"}}'
            else:
                state.requests.append(body)
                state.authorizations.append(self.headers.get("Authorization"))
                status, payload = state.reply(body)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
