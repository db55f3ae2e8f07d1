"""Retry, timeout, deadline and fallback around OpenAIModel, against a fault-injecting server.

Every case ends in an answer or a typed Keel error, within an asyncio timeout (none may hang).
Waits are recorded instead of slept, so backoff is checked without timing thresholds.
"""

import asyncio
from collections.abc import AsyncIterator

import pytest
from fault_server import FaultServer
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from keel.errors import (
    AllModelsFailedError,
    DeadlineExceededError,
    ModelRequestError,
    ModelTimeoutError,
    ModelUnavailableError,
    RateLimitError,
)
from keel.llm import InstrumentedModel, Model, ResponseDone, TextDelta, UserMessage
from keel.llm.circuit import CircuitBreaker, circuit_states
from keel.llm.fallback import FallbackModel
from keel.llm.openai import OpenAIModel
from keel.llm.provider import compatible_provider
from keel.llm.retry import RetryModel
from keel.llm.timeout import TimeoutModel, deadline

HI = [UserMessage(content="hi")]


@pytest.fixture
async def faults() -> AsyncIterator[tuple[FaultServer, str]]:
    server = FaultServer(answer="all good")
    url = await server.start()
    yield server, url
    await server.stop()


class Waits:
    """Records backoff waits instead of sleeping through them."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def stack(url: str, waits: Waits, *, timeout: float = 2.0, attempts: int = 4) -> RetryModel:
    model = OpenAIModel("fault-model", compatible_provider(url, name="faulty"))
    return RetryModel(TimeoutModel(model, timeout=timeout), max_attempts=attempts, sleep=waits)


@pytest.mark.parametrize(
    "fault", ["429:0.25", "500", "503", "slow:5", "reset", "malformed", "truncated"]
)
async def test_a_transient_fault_passes_on_retry(
    faults: tuple[FaultServer, str], fault: str
) -> None:
    server, url = faults
    server.script.extend([fault, fault])
    waits = Waits()
    model = stack(url, waits, timeout=0.5)
    response = await asyncio.wait_for(model.request(HI), 15)
    assert response.message.text == "all good"
    assert len(server.requests) == 3
    assert len(waits.delays) == 2
    if fault.startswith("429"):
        assert all(d >= 0.25 for d in waits.delays)  # Retry-After is a floor on the wait


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("503", ModelUnavailableError),
        ("429:1", RateLimitError),
        ("reset", ModelUnavailableError),
        ("malformed", ModelUnavailableError),
        ("hang", ModelTimeoutError),
    ],
)
async def test_a_lasting_fault_ends_in_a_typed_error(
    faults: tuple[FaultServer, str], fault: str, error: type[Exception]
) -> None:
    server, url = faults
    server.script.extend([fault] * 3)
    with pytest.raises(error):
        await asyncio.wait_for(stack(url, Waits(), timeout=0.3, attempts=3).request(HI), 15)
    assert len(server.requests) == 3


async def test_a_rejected_request_is_not_retried(faults: tuple[FaultServer, str]) -> None:
    server, url = faults
    server.script.append("400")
    with pytest.raises(ModelRequestError) as caught:
        await asyncio.wait_for(stack(url, Waits()).request(HI), 15)
    assert not isinstance(caught.value, ModelUnavailableError)
    assert len(server.requests) == 1


async def test_a_retry_after_longer_than_max_delay_gives_up_at_once(
    faults: tuple[FaultServer, str],
) -> None:
    server, url = faults
    server.script.append("429:3600")
    waits = Waits()
    with pytest.raises(RateLimitError) as caught:
        await asyncio.wait_for(stack(url, waits).request(HI), 15)
    assert caught.value.retry_after == 3600
    assert waits.delays == []


async def test_the_overall_deadline_stops_retries(faults: tuple[FaultServer, str]) -> None:
    server, url = faults
    server.script.extend(["hang"] * 10)
    model = stack(url, Waits(), timeout=5.0, attempts=10)
    with deadline(0.4), pytest.raises(DeadlineExceededError):
        await asyncio.wait_for(model.request(HI), 15)
    assert len(server.requests) == 1


async def test_streams_retry_before_the_first_event_only(faults: tuple[FaultServer, str]) -> None:
    server, url = faults
    server.script.extend(["503", "ok"])
    model = stack(url, Waits())

    async def collect() -> list[object]:
        return [e async for e in model.stream(HI)]

    events = await asyncio.wait_for(collect(), 15)
    assert "".join(e.text for e in events if isinstance(e, TextDelta)).strip() == "all good"
    assert isinstance(events[-1], ResponseDone)

    for fault in ("truncated", "cut", "slow:1"):
        server.script.append(fault)
        got: list[object] = []
        with pytest.raises(ModelUnavailableError):  # ModelTimeoutError for the slow one
            async for event in stack(url, Waits(), timeout=0.5, attempts=1).stream(HI):
                got.append(event)
        assert not any(isinstance(e, ResponseDone) for e in got)


async def test_fallback_answers_and_the_breaker_opens(faults: tuple[FaultServer, str]) -> None:
    server, url = faults
    backup = FaultServer(answer="from backup")
    backup_url = await backup.start()
    try:
        now = [0.0]
        breaker = CircuitBreaker(
            "primary", failure_threshold=2, reset_timeout=30, clock=lambda: now[0]
        )
        primary = stack(url, Waits(), attempts=2)
        chain = FallbackModel(
            [primary, stack(backup_url, Waits())],
            breakers=[breaker, CircuitBreaker("backup", clock=lambda: now[0])],
        )
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        traced = InstrumentedModel(chain, tracer_provider=provider)

        server.script.extend(["503"] * 4)
        for _ in range(2):
            response = await asyncio.wait_for(traced.request(HI), 15)
            assert response.message.text == "from backup"
        assert breaker.state == "open"
        assert circuit_states()["primary"] == "open"
        assert len(server.requests) == 4

        response = await asyncio.wait_for(traced.request(HI), 15)  # primary skipped
        assert response.message.text == "from backup"
        assert len(server.requests) == 4
        span = exporter.get_finished_spans()[-1]
        states = [(e.attributes or {}).get("keel.circuit.state") for e in span.events]
        assert states[0] == "open"
        assert (span.attributes or {})["keel.fallback.model"] == "fault-model"

        now[0] = 31.0  # half-open: one probe goes to the primary, which has recovered
        response = await asyncio.wait_for(traced.request(HI), 15)
        assert response.message.text == "all good"
        assert breaker.state == "closed"
    finally:
        await backup.stop()


async def test_every_model_failing_is_one_typed_error(faults: tuple[FaultServer, str]) -> None:
    server, url = faults
    server.script.extend(["500"] * 4)
    chain = FallbackModel([stack(url, Waits(), attempts=2), stack(url, Waits(), attempts=2)])
    with pytest.raises(AllModelsFailedError) as caught:
        await asyncio.wait_for(chain.request(HI), 15)
    assert len(caught.value.errors) == 2
    assert all(isinstance(e, ModelUnavailableError) for e in caught.value.errors)


async def test_fallback_stream_moves_on_before_the_first_event(
    faults: tuple[FaultServer, str],
) -> None:
    server, url = faults
    server.script.extend(["503"])
    backup = FaultServer(answer="backup stream")
    backup_url = await backup.start()
    try:
        chain: Model = FallbackModel([stack(url, Waits(), attempts=1), stack(backup_url, Waits())])
        events = [e async for e in chain.stream(HI)]
        done = events[-1]
        assert isinstance(done, ResponseDone)
        assert done.response.message.text.strip() == "backup stream"
    finally:
        await backup.stop()
