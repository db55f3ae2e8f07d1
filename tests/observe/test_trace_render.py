"""render_trace and render_summary, rendered to plain text the way a terminal would show them."""

from __future__ import annotations

import re

from rich.console import Console, RenderableType
from rich.text import Text

from keel.observe import SpanRecord, render_summary, render_trace, summarize_trace
from keel.observe.records import SpanStatus
from keel.observe.render import format_duration

MS = 1_000_000
TRACE = "0123456789abcdef" * 2


def _span(
    span_id: str,
    parent: str | None,
    name: str,
    start_ms: int,
    duration_ms: int,
    *,
    status: SpanStatus = "unset",
    message: str = "",
    tokens: tuple[int, int] | None = None,
) -> SpanRecord:
    attributes: dict[str, str | int] = {"gen_ai.operation.name": name.split()[0]}
    if tokens is not None:
        attributes["gen_ai.usage.input_tokens"] = tokens[0]
        attributes["gen_ai.usage.output_tokens"] = tokens[1]
    return SpanRecord(
        trace_id=TRACE,
        span_id=span_id * 16,
        parent_span_id=parent * 16 if parent else None,
        name=name,
        start_ns=start_ms * MS,
        end_ns=(start_ms + duration_ms) * MS,
        status=status,
        status_message=message,
        attributes=attributes,
    )


def _text(renderable: RenderableType) -> str:
    console = Console(record=True, width=120)
    console.print(renderable)
    return console.export_text()


def _lines(renderable: RenderableType) -> list[str]:
    return [line.rstrip() for line in _text(renderable).splitlines()]


SPANS = [
    # Given out of order: the tree orders children by start.
    _span("c", "a", "execute_tool search", 400, 50),
    _span("a", None, "invoke_agent helper", 0, 1234),
    _span("d", "c", "retrieval docs", 410, 30),
    _span("b", "a", "chat tiny", 10, 123, tokens=(45, 12)),
    _span("e", "a", "execute_tool divide", 500, 2, status="error", message="division by zero"),
]


def test_the_tree_nests_children_under_parents_in_start_order() -> None:
    lines = _lines(render_trace(SPANS))
    assert lines == [
        "trace 0123456789ab  5 spans",
        "└── invoke_agent helper  1.23 s",
        "    ├── chat tiny  123 ms  in=45 out=12 tok",
        "    ├── execute_tool search  50 ms",
        "    │   └── retrieval docs  30 ms",
        "    └── execute_tool divide  2 ms  division by zero",
    ]


def test_failed_spans_are_red_and_others_are_not() -> None:
    root = render_trace(SPANS).children[0]
    labels = {str(node.label).split("  ")[0]: node.label for node in root.children}
    failed, ok = labels["execute_tool divide"], labels["chat tiny"]
    assert isinstance(failed, Text) and isinstance(ok, Text)
    assert "red" in str(failed.style)
    assert "red" not in str(ok.style)
    assert all("red" not in str(span.style) for span in ok.spans)


def test_spans_whose_parent_is_missing_are_shown_at_the_top_level() -> None:
    spans = [
        *SPANS,
        _span("f", "9", "chat orphan", 5, 7, tokens=(3, 4)),
        _span("0", None, "invoke_agent second", 2000, 10),
    ]
    lines = _lines(render_trace(spans))
    # Top-level spans, in start order: the orphan comes after the first root and its subtree.
    top = [line for line in lines if line.startswith(("├── ", "└── "))]
    assert top == [
        "├── invoke_agent helper  1.23 s",
        "├── chat orphan  7 ms  in=3 out=4 tok",
        "└── invoke_agent second  10 ms",
    ]
    assert lines.index(top[1]) == lines.index(top[0]) + 5


def test_spans_in_a_parent_cycle_are_not_lost() -> None:
    spans = [_span("a", "b", "chat one", 0, 5), _span("b", "a", "chat two", 1, 5)]
    text = _text(render_trace(spans))
    assert "chat one" in text and "chat two" in text


def test_an_empty_trace_renders_as_no_spans() -> None:
    assert _lines(render_trace([])) == ["no spans"]


def test_durations_read_naturally() -> None:
    assert format_duration(420_000) == "0.42 ms"
    assert format_duration(123 * MS) == "123 ms"
    assert format_duration(4_560 * MS) == "4.56 s"


def test_the_summary_shows_steps_calls_tokens_and_wall_time() -> None:
    lines = _lines(render_summary(summarize_trace(SPANS)))
    assert lines[0] == "Trace 0123456789ab  invoke_agent helper"
    rows = [re.split(r" {2,}", line.strip()) for line in lines[1:]]
    assert dict((key, value) for key, value in rows) == {
        "steps": "4",
        "model calls": "1",
        "tool calls": "2",
        "retrievals": "1",
        "tokens in": "45",
        "tokens out": "12",
        "wall time": "1.23 s",
        "status": "ok, 1 failed span",
    }


def test_the_summary_of_a_failed_run_says_error() -> None:
    spans = [_span("a", None, "invoke_agent helper", 0, 10, status="error", message="boom")]
    assert _lines(render_summary(summarize_trace(spans)))[-1].split() == ["status", "error"]
