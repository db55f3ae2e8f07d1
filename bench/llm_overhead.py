"""Cost of Keel's LLM layer: wrapper-stack CPU per call, and tokens/s of the embedded model.

1. Per-call CPU overhead. A stub OpenAI-compatible server in a child process answers every
   request at once (so the model's time does not drown the figure), on 127.0.0.1. The same
   request is made N times with the official ``openai`` SDK directly, then through Keel's full
   stack: ``InstrumentedModel`` (an OpenTelemetry SDK tracer provider recording every span, and a
   price table) around ``FallbackModel`` (circuit breaker) around ``RetryModel`` around
   ``TimeoutModel`` around ``OpenAIModel``. The figure is the client process's CPU time per call
   (``time.process_time``), Keel minus direct; the server's CPU is not in it. Goal: < 1 ms.
2. Tokens/s of the embedded model (SmolLM2-135M): ``LlamaCppModel.request`` against the same
   body sent straight to xllamacpp's ``handle_chat_completions``, alternating, same seed and
   prompt. Goal: Keel within 10 % of the runtime. ``--threads`` defaults to 1: on a machine
   whose cores are busy with other work, llama.cpp with as many threads as cores slows down by
   an order of magnitude (threads wait on each other), which swamps the comparison.

Run: .venv/bin/python bench/llm_overhead.py [--calls 2000] [--runs 5] [--tokens 128]
     [--threads 1] [--only overhead|tokens]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from typing import Any

import openai
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from keel.llm import InstrumentedModel, ModelSettings, UserMessage
from keel.llm.cost import Price, PriceTable
from keel.llm.fallback import FallbackModel
from keel.llm.openai import OpenAIModel
from keel.llm.provider import compatible_provider
from keel.llm.retry import RetryModel
from keel.llm.timeout import TimeoutModel

_REPLY = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 0,
        "model": "stub",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13},
    }
).encode()


async def _serve() -> None:
    """The stub endpoint: HTTP/1.1 keep-alive, one canned chat completion per request."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(_REPLY)}\r\n\r\n".encode()
                    + _REPLY
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


async def _per_call_cpu(call: Any, calls: int) -> float:
    for _ in range(50):  # warm-up: connections, imports, caches
        await call()
    start = time.process_time()
    for _ in range(calls):
        await call()
    return (time.process_time() - start) / calls


async def overhead(url: str, calls: int, runs: int) -> None:
    client = openai.AsyncOpenAI(base_url=url, api_key="EMPTY", max_retries=0)
    messages = [{"role": "user", "content": "hi"}]

    async def direct() -> None:
        await client.chat.completions.create(model="stub", messages=messages, max_tokens=8)

    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    inner = OpenAIModel("stub", compatible_provider(url, name="stub"))
    stack = InstrumentedModel(
        FallbackModel([RetryModel(TimeoutModel(inner, timeout=30))]),
        prices=PriceTable({"stub": Price(input=1.0, output=2.0)}),
        tracer_provider=tracer_provider,
    )
    keel_messages = [UserMessage(content="hi")]
    settings = ModelSettings(max_tokens=8)

    async def through_keel() -> None:
        await stack.request(keel_messages, settings=settings)
        if len(exporter.get_finished_spans()) > 1000:
            exporter.clear()

    direct_ms, keel_ms = [], []
    for _ in range(runs):
        direct_ms.append(await _per_call_cpu(direct, calls) * 1000)
        keel_ms.append(await _per_call_cpu(through_keel, calls) * 1000)
    d, k = statistics.median(direct_ms), statistics.median(keel_ms)
    print(f"per-call CPU, median of {runs} runs x {calls} calls (stub endpoint, loopback):")
    print(f"  openai SDK directly           {d:.3f} ms")
    print(f"  Keel stack (trace+cost+fallback+retry+timeout+OpenAIModel) {k:.3f} ms")
    print(f"  overhead of the Keel stack    {k - d:.3f} ms per call")
    print(f"  runs (direct ms): {', '.join(f'{x:.3f}' for x in direct_ms)}")
    print(f"  runs (keel ms):   {', '.join(f'{x:.3f}' for x in keel_ms)}")
    await client.close()
    await stack.aclose()


async def tokens_per_second(runs: int, tokens: int, threads: int) -> None:
    from keel.llm.local import LlamaCppModel

    model = LlamaCppModel(context_size=2048, threads=threads, max_tokens=tokens, seed=1)
    prompt = "Write a long story about a lighthouse keeper and the sea."
    settings = ModelSettings(max_tokens=tokens, temperature=0.0, seed=1)
    body = model._body([UserMessage(content=prompt)], (), None, settings)
    server = model._server

    def raw() -> tuple[int, float]:
        start = time.perf_counter()
        result = server.handle_chat_completions(body)
        return result["usage"]["completion_tokens"], time.perf_counter() - start

    async def keel() -> tuple[int, float]:
        start = time.perf_counter()
        response = await model.request([UserMessage(content=prompt)], settings=settings)
        return response.usage.output_tokens, time.perf_counter() - start

    raw()  # warm-up
    raw_rates, keel_rates = [], []
    for _ in range(runs):
        n, t = raw()
        raw_rates.append(n / t)
        n, t = await keel()
        keel_rates.append(n / t)
    r, k = statistics.median(raw_rates), statistics.median(keel_rates)
    print(f"embedded model, {threads} threads, {tokens} tokens per call, {runs} alternating runs:")
    print(f"  xllamacpp directly  {r:.1f} tokens/s")
    print(f"  through Keel        {k:.1f} tokens/s ({(k / r - 1) * 100:+.1f} %)")
    await model.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls per overhead run")
    parser.add_argument("--runs", type=int, default=5, help="runs of each measurement")
    parser.add_argument("--tokens", type=int, default=128, help="tokens generated per call")
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads")
    parser.add_argument("--only", choices=["overhead", "tokens"], help="run one measurement")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(_serve())
        return
    if args.only != "tokens":
        child = subprocess.Popen(
            [sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, text=True
        )
        try:
            assert child.stdout is not None
            url = f"http://127.0.0.1:{child.stdout.readline().strip()}/v1"
            asyncio.run(overhead(url, args.calls, args.runs))
        finally:
            child.terminate()
            child.wait()
    if args.only != "overhead":
        asyncio.run(tokens_per_second(args.runs, args.tokens, args.threads))


if __name__ == "__main__":
    main()
