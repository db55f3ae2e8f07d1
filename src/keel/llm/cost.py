"""Prices per model, and the cost of a call from its usage.

Prices change and differ by contract, so Keel ships none for hosted models: give them in code or
in a TOML file. Local models cost nothing per token. A TOML price table looks like::

    [models."gpt-4o"]
    input = 2.50    # US dollars per million input tokens
    output = 10.00  # US dollars per million output tokens

A model name matches its exact entry, else the longest entry it starts with, so ``gpt-4o``
prices ``gpt-4o-2024-08-06`` too.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from keel.errors import ConfigError
from keel.llm.messages import Usage

__all__ = ["Price", "PriceTable"]


class Price(BaseModel):
    """US dollars per million input and output tokens."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input: float = Field(ge=0)
    output: float = Field(ge=0)


class _PriceFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: dict[str, Price] = Field(default_factory=dict)


@dataclass(frozen=True)
class PriceTable:
    """Model name -> ``Price``; ``cost`` is None for a model the table does not price."""

    prices: Mapping[str, Price]

    @classmethod
    def from_toml(cls, path: Path | str) -> PriceTable:
        """Read a ``[models."NAME"]`` table of ``input``/``output`` prices (see the module doc)."""
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
            return cls(_PriceFile.model_validate(data).models)
        except OSError as e:
            raise ConfigError(f"cannot read the price table {path}: {e.strerror}") from None
        except (tomllib.TOMLDecodeError, ValidationError) as e:
            raise ConfigError(f"invalid price table {path}: {e}".splitlines()[0]) from None

    def price(self, model_name: str) -> Price | None:
        if model_name in self.prices:
            return self.prices[model_name]
        matches = [name for name in self.prices if model_name.startswith(name)]
        return self.prices[max(matches, key=len)] if matches else None

    def cost(self, model_name: str, usage: Usage) -> float | None:
        """US dollars for ``usage`` on ``model_name``, or None when it has no price."""
        price = self.price(model_name)
        if price is None:
            return None
        return (usage.input_tokens * price.input + usage.output_tokens * price.output) / 1e6
