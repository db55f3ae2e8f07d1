"""A calculator that evaluates arithmetic by walking the syntax tree: no ``eval``, no names
beyond a fixed table of math functions and constants, bounded sizes so ``9**9**9`` cannot hang."""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from typing import Any

from keel.errors import ToolExecutionError

__all__ = ["calculator", "evaluate"]

MAX_LENGTH = 500
MAX_NODES = 200
MAX_EXPONENT = 10_000
MAX_MAGNITUDE = 10**300

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
}
_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "abs": abs,
    "round": round,
    "min": min,
    "max": max,
    "sqrt": math.sqrt,
    "exp": math.exp,
    "log": math.log,
    "log10": math.log10,
    "log2": math.log2,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "asin": math.asin,
    "acos": math.acos,
    "atan": math.atan,
    "floor": math.floor,
    "ceil": math.ceil,
    "factorial": math.factorial,
}
_CONSTANTS = {"pi": math.pi, "e": math.e, "tau": math.tau}
_HINT = (
    "use numbers, + - * / // % ** and parentheses, the constants pi, e, tau and the functions "
    + ", ".join(sorted(_FUNCTIONS))
)


def _fail(message: str) -> ToolExecutionError:
    return ToolExecutionError(message, hint=_HINT)


def _check(value: Any) -> Any:
    if isinstance(value, int) and abs(value) > MAX_MAGNITUDE:
        raise _fail("the result is too large")
    if isinstance(value, float) and not math.isfinite(value):
        raise _fail("the result is not a finite number")
    return value


def _guard_power(base: Any, exponent: Any) -> None:
    """Refuse a power whose result would take seconds and megabytes to compute."""
    if abs(exponent) > MAX_EXPONENT:
        raise _fail(f"exponents are limited to {MAX_EXPONENT}")
    exact = isinstance(base, int) and isinstance(exponent, int)
    if exact and exponent > 0 and abs(base) > 1 and exponent * math.log2(abs(base)) > 1000:
        raise _fail("the result is too large")


def _eval(node: ast.AST) -> Any:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow):
            _guard_power(left, right)
        try:
            return _check(_BINARY[type(node.op)](left, right))
        except ZeroDivisionError:
            raise _fail("division by zero") from None
        except OverflowError:
            raise _fail("the result is too large") from None
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in _FUNCTIONS
        and not node.keywords
    ):
        args = [_eval(a) for a in node.args]
        if node.func.id == "factorial" and (not args or args[0] > 1000):
            raise _fail("factorial is limited to 1000")
        try:
            return _check(_FUNCTIONS[node.func.id](*args))
        except (ValueError, TypeError, OverflowError) as e:
            raise _fail(f"{node.func.id}: {e}") from None
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        raise _fail(f"unknown function {node.func.id!r}")
    if isinstance(node, ast.Name):
        raise _fail(f"unknown name {node.id!r}")
    raise _fail(f"{type(node).__name__} is not allowed in an expression")


def evaluate(expression: str) -> int | float:
    """The value of an arithmetic expression; raises ``ToolExecutionError`` on anything else."""
    if len(expression) > MAX_LENGTH:
        raise _fail(f"the expression is longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as e:
        raise _fail(f"not a valid expression: {e.msg}") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise _fail(f"the expression has more than {MAX_NODES} parts")
    value = _eval(tree)
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value  # type: ignore[no-any-return]


def calculator(expression: str) -> int | float:
    """Evaluate an arithmetic expression exactly, e.g. "(3 + 4) * sqrt(16) / 2".

    Args:
        expression: Numbers, + - * / // % ** and parentheses; pi, e, tau; functions such as
            sqrt, log, sin, round, min, max.
    """
    return evaluate(expression)
