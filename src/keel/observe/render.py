"""Terminal views of the trace store with rich: one trace as a span tree, and a trace's summary.

Both return rich renderables and print nothing, so the CLI decides where they go and tests can
render them to text.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from keel.observe import semconv as sc
from keel.observe.records import SpanRecord, TraceSummary

__all__ = ["format_duration", "render_summary", "render_trace"]


def render_trace(spans: Sequence[SpanRecord]) -> Tree:
    """The spans as a tree: children under their parent in start order, each labelled
    ``name  123 ms  in=45 out=12 tok`` (tokens only when the span has usage), failed spans in red
    with their message. A span whose parent is missing (remote, still running or deleted) is
    shown at the top level, under the trace header."""
    ordered = sorted(spans, key=lambda s: (s.start_ns, -s.end_ns, s.span_id))
    ids = {s.span_id for s in ordered}
    children: defaultdict[str | None, list[SpanRecord]] = defaultdict(list)
    for span in ordered:
        parent = span.parent_span_id
        children[parent if parent in ids and parent != span.span_id else None].append(span)

    trace_ids = sorted({s.trace_id for s in ordered})
    if not trace_ids:
        header = Text("no spans", style="dim")
    else:
        header = Text.assemble(
            ("trace ", "bold"), (", ".join(t[:12] for t in trace_ids), "bold cyan")
        )
        header.append(f"  {len(ordered)} span{'s' if len(ordered) != 1 else ''}", style="dim")
    tree = Tree(header, guide_style="dim")

    placed: set[int] = set()

    def place(tops: Sequence[SpanRecord]) -> None:
        stack = [(span, tree) for span in reversed(tops)]
        while stack:
            span, parent_node = stack.pop()
            if id(span) in placed:
                continue
            placed.add(id(span))
            node = parent_node.add(_label(span))
            stack.extend((child, node) for child in reversed(children.get(span.span_id, [])))

    place(children[None])
    # Spans whose parent links form a cycle (malformed input) cannot be reached from the top;
    # they are shown at the top level rather than lost.
    place([s for s in ordered if id(s) not in placed])
    return tree


def render_summary(summary: TraceSummary) -> Table:
    """One trace's steps, model calls, tool calls, retrievals, tokens in and out, wall time and
    status, one per line under a title with the trace id and root span, so it fits any width."""
    title = Text.assemble(("Trace ", "bold"), (summary.trace_id[:12], "bold cyan"))
    title.append(f"  {summary.root_name}")
    table = Table(
        title=title,
        title_justify="left",
        box=None,
        show_header=False,
        padding=(0, 2, 0, 2),
        min_width=title.cell_len,  # a narrower table would wrap its title
    )
    table.add_column("what", style="dim")
    table.add_column("value")
    if summary.status == "error":
        status = Text("error", style="bold red")
    elif summary.errors:
        failed = f"{summary.errors} failed span{'s' if summary.errors != 1 else ''}"
        status = Text.assemble(("ok", "green"), (f", {failed}", "yellow"))
    else:
        status = Text("ok", style="green")
    table.add_row("steps", str(summary.steps))
    table.add_row("model calls", str(summary.model_calls))
    table.add_row("tool calls", str(summary.tool_calls))
    table.add_row("retrievals", str(summary.retrievals))
    table.add_row("tokens in", str(summary.input_tokens))
    table.add_row("tokens out", str(summary.output_tokens))
    table.add_row("wall time", format_duration(round(summary.wall_time_s * 1e9)))
    table.add_row("status", status)
    return table


def format_duration(nanoseconds: int) -> str:
    """A span duration for people: ``0.42 ms``, ``123 ms`` or ``4.56 s``."""
    ms = nanoseconds / 1e6
    if ms < 1:
        return f"{ms:.2f} ms"
    if ms < 1000:
        return f"{ms:.0f} ms"
    return f"{ms / 1000:.2f} s"


def _label(span: SpanRecord) -> Text:
    failed = span.status == "error"
    label = Text(span.name, style="bold red" if failed else "")
    label.append(f"  {format_duration(span.duration_ns)}", style="red" if failed else "cyan")
    tokens_in = span.int_attribute(sc.GEN_AI_USAGE_INPUT_TOKENS)
    tokens_out = span.int_attribute(sc.GEN_AI_USAGE_OUTPUT_TOKENS)
    if tokens_in is not None or tokens_out is not None:
        counts = [f"in={tokens_in}" if tokens_in is not None else ""]
        counts.append(f"out={tokens_out}" if tokens_out is not None else "")
        label.append(f"  {' '.join(c for c in counts if c)} tok", style="magenta")
    if failed:
        label.append(f"  {_error_message(span)}", style="red")
    return label


def _error_message(span: SpanRecord) -> str:
    """The status message, else the recorded exception, else the error type."""
    if span.status_message:
        return span.status_message
    for event in span.events:
        if event.name == "exception":
            kind = event.attributes.get("exception.type", "")
            message = event.attributes.get("exception.message", "")
            return ": ".join(str(part) for part in (kind, message) if part) or "error"
    error_type = span.attributes.get(sc.ERROR_TYPE)
    return str(error_type) if error_type else "error"
