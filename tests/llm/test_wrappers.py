"""Circuit breaker, backoff, fallback rules, cost and token counting, on the test doubles."""

import random
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from keel.errors import (
    AllModelsFailedError,
    ConfigError,
    ModelRequestError,
    ModelUnavailableError,
    OutputValidationError,
)
from keel.llm import InstrumentedModel, Usage, UserMessage
from keel.llm.circuit import CircuitBreaker
from keel.llm.cost import Price, PriceTable
from keel.llm.fallback import FallbackModel
from keel.llm.retry import RetryModel
from keel.llm.testing import ScriptedModel, Step
from keel.llm.tokens import estimate_message_tokens, estimate_tokens

HI = [UserMessage(content="hi")]


def test_breaker_opens_after_n_failures_within_the_window() -> None:
    now = [0.0]
    breaker = CircuitBreaker(
        "m", failure_threshold=3, window=10, reset_timeout=5, clock=lambda: now[0]
    )
    breaker.record_failure()
    now[0] = 11.0  # the first failure has left the window
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state == "closed"
    breaker.record_failure()
    assert breaker.state == "open"
    assert not breaker.allow()


def test_half_open_lets_one_probe_through_and_its_outcome_decides() -> None:
    now = [0.0]
    breaker = CircuitBreaker("m", failure_threshold=1, reset_timeout=5, clock=lambda: now[0])
    breaker.record_failure()
    now[0] = 5.0
    assert breaker.state == "half_open"
    assert breaker.allow()
    assert not breaker.allow()  # a second caller waits for the probe
    breaker.record_failure()
    assert breaker.state == "open"
    now[0] = 10.0
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state == "closed"
    assert breaker.allow()


def test_full_jitter_stays_within_the_exponential_cap() -> None:
    retry = RetryModel(ScriptedModel([]), base_delay=1, max_delay=6, rng=random.Random(3))
    error = ModelUnavailableError("x")
    for attempt, cap in [(1, 1), (2, 2), (3, 4)]:
        waits = [retry.delay(attempt, error) for _ in range(200)]
        assert all(w is not None and 0 <= w <= cap for w in waits)
        assert max(w for w in waits if w is not None) > cap * 0.8  # spread over the whole range
    assert retry.delay(4, error) is None  # max_attempts reached
    assert retry.delay(1, ModelUnavailableError("x", retry_after=3)) == pytest.approx(3, abs=1)


async def test_fallback_does_not_retry_a_structured_output_failure() -> None:
    first = ScriptedModel([OutputValidationError("bad shape")], name="a")
    second = ScriptedModel(["never used"], name="b")
    with pytest.raises(OutputValidationError):
        await FallbackModel([first, second]).request(HI)
    assert second.calls == []


async def test_fallback_moves_on_after_any_model_error() -> None:
    first = ScriptedModel([ModelRequestError("HTTP 400")], name="a")
    second = ScriptedModel(["from b"], name="b")
    response = await FallbackModel([first, second]).request(HI)
    assert response.message.text == "from b"


async def test_fallback_lets_programming_errors_through() -> None:
    chain = FallbackModel([ScriptedModel([KeyError("bug")]), ScriptedModel(["x"])])
    with pytest.raises(KeyError):
        await chain.request(HI)


async def test_open_breakers_everywhere_is_all_models_failed() -> None:
    breakers = [CircuitBreaker("a", failure_threshold=1), CircuitBreaker("b", failure_threshold=1)]
    for b in breakers:
        b.record_failure()
    chain = FallbackModel([ScriptedModel([]), ScriptedModel([])], breakers=breakers)
    with pytest.raises(AllModelsFailedError, match="circuit breaker of scripted is open"):
        await chain.request(HI)


def test_price_table_from_toml_prefix_match(tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(
        '[models."gpt-4o"]\ninput = 2.5\noutput = 10\n'
        '[models."gpt-4o-mini"]\ninput = 0.15\noutput = 0.6\n'
    )
    table = PriceTable.from_toml(path)
    usage = Usage(input_tokens=1_000_000, output_tokens=500_000)
    assert table.cost("gpt-4o-2024-08-06", usage) == pytest.approx(7.5)
    assert table.cost("gpt-4o-mini-2024-07-18", usage) == pytest.approx(0.45)
    assert table.cost("claude-x", usage) is None
    path.write_text('[models."m"]\ninput = -1\noutput = 1\n')
    with pytest.raises(ConfigError, match="invalid price table"):
        PriceTable.from_toml(path)
    with pytest.raises(ConfigError, match="cannot read"):
        PriceTable.from_toml(tmp_path / "missing.toml")


async def test_cost_and_usage_land_on_the_chat_span() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    scripted = ScriptedModel([Step("ok", usage=Usage(input_tokens=1000, output_tokens=100))])
    prices = PriceTable({"scripted": Price(input=3.0, output=15.0)})
    model = InstrumentedModel(scripted, prices=prices, tracer_provider=provider)
    await model.request(HI)
    attributes = exporter.get_finished_spans()[0].attributes or {}
    assert attributes["keel.cost.usd"] == pytest.approx(0.0045)
    assert attributes["gen_ai.usage.input_tokens"] == 1000


async def test_estimates_over_count_and_wrappers_forward_counting() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("abcdef") == 2
    assert estimate_tokens("é" * 3) == 2  # UTF-8 bytes, not characters
    messages = [UserMessage(content="x" * 30)]
    assert estimate_message_tokens(messages) == 10 + 6 + 3
    wrapped = InstrumentedModel(RetryModel(ScriptedModel([])))
    assert await wrapped.count_tokens(messages) == estimate_message_tokens(messages)
    assert await wrapped.count_text_tokens("abc") == 1
