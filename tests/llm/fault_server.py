"""A fault-injecting OpenAI-compatible HTTP endpoint for resilience tests (127.0.0.1 only).

Each request takes the next behaviour from ``script`` ("ok" once it is empty): ``ok``,
``429:SECONDS`` (with Retry-After), ``500``, ``503``, ``400``, ``slow:SECONDS`` (then ok),
``hang`` (never answers), ``reset`` (TCP reset, no reply), ``malformed`` (200 with broken JSON),
``truncated`` (the body or stream stops mid-way and the connection drops), ``cut`` (a stream
that ends cleanly but without a finish reason).
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from collections import deque
from typing import Any


def _completion(text: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fault",
        "object": "chat.completion",
        "created": 0,
        "model": "fault-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
    }


def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    body = {
        "id": "chatcmpl-fault",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "fault-model",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(body)}\n\n".encode()


class FaultServer:
    """Serves scripted faults; ``requests`` records each request's body."""

    def __init__(self, *, answer: str = "fine") -> None:
        self.script: deque[str] = deque()
        self.requests: list[dict[str, Any]] = []
        self.answer = answer
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in self._handlers:
                task.cancel()
            await asyncio.gather(*self._handlers, return_exceptions=True)
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.decode("latin-1").split("\r\n"):
                if line.lower().startswith("content-length:"):
                    length = int(line.split(":", 1)[1])
            body = json.loads(await reader.readexactly(length)) if length else {}
            self.requests.append(body)
            action = self.script.popleft() if self.script else "ok"
            await self._act(action, bool(body.get("stream")), writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # the client went away, or the server is stopping
        finally:
            if not writer.transport.is_closing():
                writer.close()

    @staticmethod
    def _reply(status: str, body: bytes, headers: dict[str, str] | None = None) -> bytes:
        lines = [f"HTTP/1.1 {status}", "Content-Type: application/json", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    async def _act(self, action: str, stream: bool, writer: asyncio.StreamWriter) -> None:
        kind, _, arg = action.partition(":")
        error = b'{"error": {"message": "injected fault"}}'
        if kind == "429":
            writer.write(self._reply("429 Too Many Requests", error, {"Retry-After": arg}))
        elif kind in {"400", "500", "503"}:
            writer.write(self._reply(f"{kind} Injected", error))
        elif kind == "hang":
            await asyncio.sleep(3600)
        elif kind == "reset":
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return
        elif kind == "malformed":
            writer.write(self._reply("200 OK", b'{"choices": [{"index": 0, "mess'))
        elif kind == "truncated" and not stream:
            body = json.dumps(_completion(self.answer)).encode()
            whole = self._reply("200 OK", body)
            writer.write(whole[: len(whole) - len(body) // 2])
            await writer.drain()
            writer.transport.abort()
            return
        elif stream:
            await self._stream(kind, arg, writer)
        else:
            if kind == "slow":
                await asyncio.sleep(float(arg))
            writer.write(self._reply("200 OK", json.dumps(_completion(self.answer)).encode()))
        await writer.drain()

    async def _stream(self, kind: str, arg: str, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )

        def send(data: bytes) -> None:
            writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")

        send(_chunk({"role": "assistant", "content": ""}))
        for word in self.answer.split(" "):
            if kind == "slow":
                await asyncio.sleep(float(arg))
            send(_chunk({"content": word + " "}))
            await writer.drain()
        if kind == "truncated":
            writer.transport.abort()
            return
        if kind != "cut":
            send(_chunk({}, finish="stop"))
            send(b"data: [DONE]\n\n")
        writer.write(b"0\r\n\r\n")
