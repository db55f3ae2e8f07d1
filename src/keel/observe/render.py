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

__all__ = [
    "format_cost",
    "format_duration",
    "keel_attributes",
    "render_summary",
    "render_trace",
]


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
    if summary.cost_usd:
        table.add_row("cost", format_cost(summary.cost_usd))
    table.add_row("wall time", format_duration(round(summary.wall_time_s * 1e9)))
    if summary.agent_name:
        table.add_row("agent", Text(summary.agent_name))
    if summary.conversation_id:
        table.add_row("session", Text(summary.conversation_id))
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
    cost = span.float_attribute(sc.KEEL_COST_USD)
    if cost is not None:
        label.append(f"  {format_cost(cost)}", style="green")
    if failed:
        label.append(f"  {_error_message(span)}", style="red")
    extras = keel_attributes(span)
    if extras:
        label.append("  " + "  ".join(f"{k}={v}" for k, v in extras), style="dim")
    return label


# Shown elsewhere in the label, or too long to be useful on one line.
_HIDDEN = frozenset(
    {sc.KEEL_COST_USD, sc.KEEL_REQUEST_TOOLS, sc.KEEL_GRAPH_PATH, sc.KEEL_GRAPH_NODE}
)
MAX_SHOWN_VALUE = 48


def keel_attributes(span: SpanRecord) -> list[tuple[str, str]]:
    """Keel's own ``keel.*`` attributes of a span (cache hits, budgets, policy decisions, ...)
    as short ``(name, value)`` pairs, ``keel.`` dropped, in name order, long values cut.

    Generic on purpose: a layer that adds an attribute under ``keel.`` is shown without any
    change here."""
    pairs: list[tuple[str, str]] = []
    for key in sorted(span.attributes):
        if not key.startswith("keel.") or key in _HIDDEN:
            continue
        value = span.attributes[key]
        if isinstance(value, bool):
            text = str(value).lower()
        elif isinstance(value, float):
            text = f"{value:.4g}"
        elif isinstance(value, str | int):
            text = str(value)
        else:
            text = ",".join(str(v) for v in value)
        text = " ".join(text.split())
        if len(text) > MAX_SHOWN_VALUE:
            text = text[: MAX_SHOWN_VALUE - 1] + "…"
        pairs.append((key.removeprefix("keel."), text))
    return pairs


def format_cost(usd: float) -> str:
    """A cost in US dollars with enough digits for a single cheap call: ``$0.000420``."""
    if usd == 0:
        return "$0"
    if usd >= 0.01:
        return f"${usd:.4f}"
    return f"${usd:.6f}"


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
