"""Argument schemas from Python signatures: type hints give types, the docstring gives words."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Annotated, Any, get_args, get_origin, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, create_model

__all__ = ["arguments_model", "parse_docstring", "secret_parameters"]

_SECTION = re.compile(r"^\s*(Args|Arguments|Parameters|Returns|Raises|Yields|Examples?):\s*$")
_ARG = re.compile(r"^\s*(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """Split a Google-style docstring into its summary and per-argument descriptions."""
    if not doc:
        return "", {}
    lines = inspect.cleandoc(doc).splitlines()
    summary: list[str] = []
    args: dict[str, str] = {}
    section: str | None = None
    current: str | None = None
    for line in lines:
        header = _SECTION.match(line)
        if header:
            section, current = header.group(1), None
            continue
        if section is None:
            summary.append(line)
        elif section in ("Args", "Arguments", "Parameters"):
            arg = _ARG.match(line)
            if arg and (current is None or len(line) - len(line.lstrip()) <= 4):
                current = arg.group(1)
                args[current] = arg.group(2).strip()
            elif current and line.strip():
                args[current] = f"{args[current]} {line.strip()}".strip()
    text = "\n".join(summary).strip()
    return text.split("\n\n")[0].replace("\n", " "), args


def secret_parameters(function: Callable[..., Any]) -> dict[str, str]:
    """Parameters annotated ``Annotated[str, Secret("NAME")]``, mapped to the secret's name."""
    from keel.tools.secrets import Secret

    found: dict[str, str] = {}
    for name, hint in get_type_hints(function, include_extras=True).items():
        if get_origin(hint) is Annotated:
            for meta in get_args(hint)[1:]:
                if isinstance(meta, Secret):
                    found[name] = meta.name
    return found


def arguments_model(function: Callable[..., Any], model_name: str) -> type[BaseModel]:
    """A Pydantic model of ``function``'s parameters (unknown arguments are rejected).

    Every parameter needs a type hint: the hint is what the model is told and what the arguments
    are validated against. Secret parameters are left out: the model never sees or sets them.
    """
    hints = get_type_hints(function, include_extras=True)
    _, descriptions = parse_docstring(function.__doc__)
    fields: dict[str, Any] = {}
    secrets = secret_parameters(function)
    for name, param in inspect.signature(function).parameters.items():
        if name in secrets:
            continue
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise TypeError(f"tool {model_name}: *args and **kwargs cannot be described to a model")
        if name not in hints:
            raise TypeError(f"tool {model_name}: parameter '{name}' has no type hint")
        default = ... if param.default is param.empty else param.default
        fields[name] = (hints[name], Field(default, description=descriptions.get(name)))
    return create_model(model_name, __config__=ConfigDict(extra="forbid"), **fields)
