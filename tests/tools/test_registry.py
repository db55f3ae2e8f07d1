"""The tool registry: schemas from hints and docstrings, validation first, structured errors."""

import asyncio
from typing import Literal

import pytest
from pydantic import BaseModel

from keel.errors import ToolNotFoundError
from keel.llm import ToolCallPart
from keel.tools import ToolRegistry


def make_registry() -> ToolRegistry:
    registry = ToolRegistry()

    @registry.tool(version="2", examples=[{"city": "Paris"}])
    def weather(city: str, unit: Literal["C", "F"] = "C") -> dict[str, object]:
        """Current weather for a city.

        Args:
            city: Name of the city, e.g. "Paris".
            unit: Temperature unit.
        """
        return {"city": city, "temp": 21, "unit": unit}

    @registry.tool
    async def slow(seconds: float) -> str:
        """Sleep, then answer."""
        await asyncio.sleep(seconds)
        return "done"

    @registry.tool(timeout=0.05)
    async def stuck() -> str:
        """Never finishes in time."""
        await asyncio.sleep(10)
        return "never"

    @registry.tool
    def broken(x: int) -> int:
        """Always fails."""
        raise ValueError(f"cannot handle {x}")

    return registry


def call(name: str, **arguments: object) -> ToolCallPart:
    return ToolCallPart(id=f"id-{name}", name=name, arguments=arguments)


def test_schema_comes_from_type_hints_and_docstring() -> None:
    tool = make_registry().get("weather")
    assert tool.description == "Current weather for a city."
    assert tool.version == "2"
    params = tool.parameters
    assert params["required"] == ["city"]
    assert params["properties"]["city"] == {
        "type": "string",
        "description": 'Name of the city, e.g. "Paris".',
    }
    assert params["properties"]["unit"]["enum"] == ["C", "F"]
    assert params["additionalProperties"] is False
    assert tool.definition().examples == ({"city": "Paris", "unit": "C"},)


def test_schema_hash_changes_with_the_contract() -> None:
    a, b = ToolRegistry(), ToolRegistry()

    @a.tool
    def f(x: int) -> int:
        """F."""
        return x

    def g(x: str) -> str:
        """F."""
        return x

    b.register(g, name="f")

    assert len(a.get("f").schema_hash) == 16
    assert a.get("f").schema_hash != b.get("f").schema_hash


async def test_valid_call_runs_the_handler() -> None:
    result = await make_registry().call(call("weather", city="Oslo", unit="F"))
    assert result.ok
    assert result.value == {"city": "Oslo", "temp": 21, "unit": "F"}
    message = result.to_message()
    assert message.tool_call_id == "id-weather" and not message.is_error
    assert '"temp": 21' in message.content


@pytest.mark.parametrize(
    ("arguments", "fragment"),
    [
        ({}, "city: Field required"),
        ({"city": "Oslo", "unit": "K"}, "unit: Input should be 'C' or 'F'"),
        ({"city": "Oslo", "extra": 1}, "extra: Extra inputs are not permitted"),
    ],
)
async def test_invalid_arguments_never_reach_the_handler(
    arguments: dict[str, object], fragment: str
) -> None:
    result = await make_registry().call(call("weather", **arguments))
    assert not result.ok
    assert result.error is not None
    assert result.error["type"] == "invalid_arguments"
    assert fragment in result.error["message"]
    assert result.to_message().is_error


async def test_unknown_tool_timeout_and_handler_error_are_structured() -> None:
    registry = make_registry()
    unknown = await registry.call(call("nope"))
    assert unknown.error is not None
    assert unknown.error["type"] == "unknown_tool"
    assert (
        unknown.error["message"] == "no tool named 'nope'; available: broken, slow, stuck, weather"
    )
    assert unknown.error["retryable"] is False
    timed_out = await registry.call(call("stuck"))
    assert timed_out.error is not None and timed_out.error["type"] == "timeout"
    failed = await registry.call(call("broken", x=3))
    assert failed.error == {
        "type": "tool_error",
        "message": "ValueError: cannot handle 3",
        "retryable": False,
    }
    assert failed.failure is not None and failed.failure.kind == "tool_error"


def test_registration_errors() -> None:
    registry = make_registry()
    with pytest.raises(ValueError, match="already registered"):
        registry.register(lambda city: city, name="weather", version="2.0.0")
    with pytest.raises(ValueError, match="tool name"):
        registry.register(lambda: 1, name="has space")

    def untyped(x):  # type: ignore[no-untyped-def]
        return x

    with pytest.raises(TypeError, match="parameter 'x' has no type hint"):
        registry.register(untyped)
    with pytest.raises(ToolNotFoundError, match="no tool named 'x'"):
        registry.get("x")


async def test_pydantic_model_results_are_serialised() -> None:
    class Out(BaseModel):
        value: int

    registry = ToolRegistry()

    @registry.tool
    def make(value: int) -> Out:
        """Wrap a value."""
        return Out(value=value)

    result = await registry.call(call("make", value=4))
    assert result.content() == '{"value":4}'
