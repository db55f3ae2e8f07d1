"""A simulated OpenAI-compatible endpoint for ``bench/load.py``: answers after a fixed delay.

A raw asyncio HTTP/1.1 server (keep-alive, Content-Length bodies), so that it costs as little CPU
as possible next to the process under test. ``POST /v1/chat/completions`` (plain, or streamed as
Server-Sent Events sent in one body after the delay) answers
a conversation whose last message is not a tool result with a call to the first tool offered,
and one whose last message is a tool result with a final text answer; so every agent session
goes model -> tool -> model. The reply depends only on the request, so any number of sessions
can share the server.

    python bench/load_server.py --port 0 --delay 0.2    # prints "PORT <n>" once listening
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import time
from typing import Any

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 413: "Payload Too Large"}
_MAX_BODY = 10_000_000


def chunks_for(completion: dict[str, Any]) -> bytes:
    """The same completion as the Server-Sent Events of a streamed answer, with usage last."""
    choice = completion["choices"][0]
    message = choice["message"]
    base = {k: completion[k] for k in ("id", "created", "model")}
    base["object"] = "chat.completion.chunk"
    deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
    if message.get("tool_calls"):
        deltas.append({"tool_calls": [{"index": 0, **message["tool_calls"][0]}]})
    else:
        deltas.append({"content": message["content"]})
    events = [
        {**base, "choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas
    ]
    events.append(
        {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": choice["finish_reason"]}]}
    )
    events.append({**base, "choices": [], "usage": completion["usage"]})
    body = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
    return body.encode()


def reply_for(request: dict[str, Any], counter: int) -> dict[str, Any]:
    """The chat.completion answering ``request``: a tool call first, then a final answer."""
    messages = request.get("messages") or []
    tools = request.get("tools") or []
    last = messages[-1] if messages else {}
    message: dict[str, Any]
    if last.get("role") != "tool" and tools:
        name = tools[0]["function"]["name"]
        message = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": f"call_{counter}",
                    "type": "function",
                    "function": {"name": name, "arguments": json.dumps({"key": f"k{counter}"})},
                }
            ],
        }
        finish = "tool_calls"
    else:
        message = {"role": "assistant", "content": f"done: {last.get('content', '')}"[:200]}
        finish = "stop"
    return {
        "id": f"chatcmpl-{counter}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.get("model", "simulated"),
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 20 * len(messages), "completion_tokens": 8, "total_tokens": 8},
    }


class SimulatedServer:
    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.requests = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = [*lines[0].split(" ", 2), "", ""][:3]
                headers = {}
                for line in lines[1:]:
                    key, sep, value = line.partition(":")
                    if sep:
                        headers[key.strip().lower()] = value.strip()
                length = int(headers.get("content-length") or 0)
                if length > _MAX_BODY:
                    await self._send(writer, 413, {"error": {"message": "body too large"}})
                    return
                body = await reader.readexactly(length) if length else b""
                status, payload = await self._route(method, path.split("?")[0], body)
                await self._send(writer, status, payload)
                if headers.get("connection", "").lower() == "close":
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()

    async def _route(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        if method == "POST" and path.endswith("/chat/completions"):
            try:
                request = json.loads(body)
            except ValueError:
                return 400, {"error": {"message": "malformed JSON", "type": "invalid_request"}}
            self.requests += 1
            counter = self.requests
            await asyncio.sleep(self.delay)
            completion = reply_for(request, counter)
            if request.get("stream"):
                return 200, chunks_for(completion)
            return 200, completion
        if method == "GET" and path.endswith("/models"):
            return 200, {"object": "list", "data": [{"id": "simulated", "object": "model"}]}
        return 404, {"error": {"message": f"no route {method} {path}"}}

    async def _send(self, writer: asyncio.StreamWriter, status: int, payload: Any) -> None:
        streamed = isinstance(payload, bytes)
        data = payload if streamed else json.dumps(payload).encode()
        kind = "text/event-stream" if streamed else "application/json"
        writer.write(
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
            f"Content-Type: {kind}\r\nContent-Length: {len(data)}\r\n"
            "Connection: keep-alive\r\n\r\n".encode()
            + data
        )
        await writer.drain()


async def serve(port: int, delay: float) -> None:
    server = SimulatedServer(delay)
    listener = await asyncio.start_server(server.handle, "127.0.0.1", port, backlog=4096)
    print(f"PORT {listener.sockets[0].getsockname()[1]}", flush=True)
    # Nothing to flush: end at once, without cancelling a thousand connection tasks one by one.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: os._exit(0))
    async with listener:
        await listener.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay", type=float, default=0.2, help="seconds before each answer")
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(serve(args.port, args.delay))


if __name__ == "__main__":
    main()
