"""Structured output: valid replies parse, invalid ones are fed back, then a typed error."""

import pytest
from pydantic import BaseModel

from keel.errors import OutputValidationError
from keel.llm import UserMessage, request_structured
from keel.llm.testing import ScriptedModel


class Person(BaseModel):
    name: str
    age: int


async def test_valid_reply_parses_first_time() -> None:
    model = ScriptedModel(['{"name": "Ada", "age": 36}'])
    result = await request_structured(model, [UserMessage(content="who?")], Person)
    assert result.output == Person(name="Ada", age=36)
    assert result.attempts == 1
    assert model.calls[0].output_schema == Person.model_json_schema()


async def test_invalid_reply_is_fed_back_then_corrected() -> None:
    model = ScriptedModel(['{"name": "Ada", "age": "old"}', '{"name": "Ada", "age": 36}'])
    result = await request_structured(model, [UserMessage(content="who?")], Person)
    assert result.output.age == 36
    assert result.attempts == 2
    assert result.usage.requests == 2
    feedback = model.calls[1].last_user_text
    assert "age" in feedback and "did not match" in feedback


async def test_gives_up_with_a_typed_error_after_the_retries() -> None:
    model = ScriptedModel(["not json", "still not", "nope"])
    with pytest.raises(OutputValidationError, match="no valid Person in 3 attempts"):
        await request_structured(model, [UserMessage(content="who?")], Person, retries=2)
    model.assert_done()
