"""Typed graph state: a Pydantic model whose fields say how updates combine (their reducer).

A field is replaced by an update unless its annotation carries a reducer:
``Annotated[list[str], append]`` extends the list, ``Annotated[dict[str, int], merge]`` updates
the dict, and ``Annotated[int, Reducer(operator.add)]`` applies any ``(old, new) -> value``.
Nodes return partial updates (a dict of field -> value); the engine folds them into a new state.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from keel.errors import GraphError

__all__ = ["GraphState", "NodeFailure", "Reducer", "StateSchema", "append", "merge"]


@dataclass(frozen=True)
class Reducer:
    """Combines a field's current value with an update: ``fn(old, new) -> value``."""

    fn: Callable[[Any, Any], Any]
    name: str = "custom"


def _append(old: Any, new: Any) -> list[Any]:
    items = list(old or ())
    if isinstance(new, list | tuple):
        items.extend(new)
    else:
        items.append(new)
    return items


def _merge(old: Any, new: Any) -> dict[Any, Any]:
    return {**(old or {}), **new}


append = Reducer(_append, "append")
"""Extend a list field with an update that is a list (or add one item)."""
merge = Reducer(_merge, "merge")
"""Shallow-update a dict field with an update that is a dict."""


class NodeFailure(BaseModel):
    """A node that failed after its retries, recorded in the state so routing can act on it."""

    node: str
    step: int
    type: str
    message: str
    attempts: int = 1


class GraphState(BaseModel):
    """A convenient base for states: failed nodes are appended to ``errors``."""

    errors: Annotated[list[NodeFailure], append] = Field(default_factory=list)


class StateSchema:
    """What the engine knows about a state class: reducers and validators per field."""

    def __init__(self, cls: type[BaseModel]) -> None:
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)):
            raise GraphError(f"a graph state must be a Pydantic model class, not {cls!r}")
        self.cls = cls
        self.reducers: dict[str, Reducer | None] = {}
        self.adapters: dict[str, TypeAdapter[Any]] = {}
        for name, info in cls.model_fields.items():
            reducer = next((m for m in info.metadata if isinstance(m, Reducer)), None)
            self.reducers[name] = reducer
            self.adapters[name] = TypeAdapter(info.annotation if info.annotation else Any)

    def create(self, value: BaseModel | Mapping[str, Any] | None) -> BaseModel:
        """The initial state from a model instance, a dict of fields or nothing (all defaults)."""
        if isinstance(value, self.cls):
            return value
        data = value.model_dump() if isinstance(value, BaseModel) else dict(value or {})
        try:
            return self.cls.model_validate(data)
        except ValidationError as e:
            raise GraphError(f"invalid input for {self.cls.__name__}: {e}") from None

    def apply(
        self, state: BaseModel, updates: Sequence[tuple[str, Mapping[str, Any]]]
    ) -> BaseModel:
        """Fold the updates (``(node, update)`` in task order) into a new state."""
        values: dict[str, Any] = {}
        for node, update in updates:
            for key, new in update.items():
                if key not in self.reducers:
                    raise GraphError(
                        f"node {node!r} updated {key!r}, which is not a field of "
                        f"{self.cls.__name__}"
                    )
                reducer = self.reducers[key]
                if reducer is not None:
                    old = values[key] if key in values else getattr(state, key)
                    try:
                        new = reducer.fn(old, new)
                    except (TypeError, ValueError) as e:
                        raise GraphError(
                            f"node {node!r} set {key!r} to an invalid value: {e}"
                        ) from None
                try:
                    values[key] = self.adapters[key].validate_python(new)
                except ValidationError as e:
                    raise GraphError(
                        f"node {node!r} set {key!r} to an invalid value: {e}"
                    ) from None
        return state.model_copy(update=values) if values else state

    def has_errors_field(self) -> bool:
        return self.reducers.get("errors") is append
