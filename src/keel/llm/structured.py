"""Structured output: a Pydantic model out of any ``Model``.

The JSON schema of the output type goes to the model (local models constrain decoding with it, so
the reply always parses); Keel validates the reply itself and, when it does not validate, feeds
the validation error back for a bounded number of retries before raising a typed error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from pydantic import BaseModel, ValidationError

from keel.errors import OutputValidationError
from keel.llm.base import Model
from keel.llm.messages import Message, ModelSettings, Response, Usage, UserMessage

__all__ = ["StructuredResult", "request_structured"]

T = TypeVar("T", bound=BaseModel)


@dataclass(frozen=True)
class StructuredResult(Generic[T]):
    """The validated output, the response it came from, and usage summed over every attempt."""

    output: T
    response: Response
    usage: Usage
    attempts: int


def _short(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'reply'}: {e['msg']}" for e in error.errors()[:5]
    )


async def request_structured(
    model: Model,
    messages: Sequence[Message],
    output_type: type[T],
    *,
    settings: ModelSettings | None = None,
    retries: int = 2,
) -> StructuredResult[T]:
    """Ask ``model`` for an instance of ``output_type``; retry with the error up to ``retries``."""
    schema = output_type.model_json_schema()
    conversation = list(messages)
    usage = Usage()
    for attempt in range(1, retries + 2):
        response = await model.request(conversation, output_schema=schema, settings=settings)
        usage = usage + response.usage
        try:
            output = output_type.model_validate_json(response.message.text)
        except ValidationError as e:
            error = _short(e)
            conversation += [
                response.message,
                UserMessage(
                    content=f"Your reply did not match the required JSON schema ({error}). "
                    "Reply again with only a JSON object that matches it."
                ),
            ]
            continue
        return StructuredResult(output=output, response=response, usage=usage, attempts=attempt)
    raise OutputValidationError(
        f"{model.name} gave no valid {output_type.__name__} in {retries + 1} attempts: {error}"
    )
