"""HTML of the trace viewer (``keel ui``): the run list, one trace, and the static assets.

Every value that comes from a span (names, attributes, messages: untrusted text) goes through
``html.escape`` and into element content or quoted attributes only; URLs are built with
``urllib.parse``. The pages need no script to work (span details open with CSS ``:target``);
the small script only adds row clicks and auto-submitting filters. Standard library only.
"""

from __future__ import annotations

import contextlib
import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from html import escape
from urllib.parse import urlencode

from keel.observe import semconv as sc
from keel.observe.records import AttributeValue, SpanRecord, TraceSummary, summarize_trace
from keel.observe.render import format_cost, format_duration, keel_attributes

__all__ = ["APP_CSS", "APP_JS", "graph_path", "list_page", "not_found_page", "trace_page"]


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _page(title: str, body: str) -> str:
    return (
        "<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{_e(title)} - Keel traces</title>"
        "<link rel='stylesheet' href='/static/app.css'>"
        "<script src='/static/app.js' defer></script></head><body>"
        "<header class='top'><a class='brand' href='/'>Keel traces</a></header>"
        f"<main>{body}</main></body></html>\n"
    )


def _time(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def _status_badge(status: str, errors: int = 0) -> str:
    if status == "error":
        return "<span class='badge error'>error</span>"
    if errors:
        return f"<span class='badge warn'>ok, {errors} failed</span>"
    return "<span class='badge ok'>ok</span>"


def list_page(
    summaries: Sequence[TraceSummary],
    *,
    session: str = "",
    agent: str = "",
    errors: bool = False,
    search: str = "",
    store_path: str = "",
) -> str:
    """The run list with its filter form."""
    form = (
        "<form class='filters' method='get' action='/' id='filters'>"
        f"<label>Session <input name='session' value='{_e(session)}'></label>"
        f"<label>Agent <input name='agent' value='{_e(agent)}'></label>"
        f"<label>Search <input name='q' value='{_e(search)}' placeholder='span name or attribute'>"
        "</label>"
        f"<label class='check'><input type='checkbox' name='errors' value='1' id='errors-only'"
        f"{' checked' if errors else ''}> Errors only</label>"
        "<button type='submit'>Filter</button> <a href='/'>Clear</a></form>"
    )
    rows = []
    for s in summaries:
        link = f"/trace/{s.trace_id}"
        session_cell = (
            f"<a href='/?{_e(urlencode({'session': s.conversation_id}))}'>"
            f"{_e(_short(s.conversation_id))}</a>"
            if s.conversation_id
            else ""
        )
        rows.append(
            f"<tr class='run {'failed' if s.status == 'error' or s.errors else ''}'"
            f" data-trace='{_e(s.trace_id)}'>"
            f"<td>{_e(_time(s.start_ns))}</td>"
            f"<td><a class='trace-link' href='{_e(link)}'>{_e(s.trace_id[:12])}</a></td>"
            f"<td class='name'>{_e(s.root_name)}</td>"
            f"<td>{_e(s.agent_name or '')}</td>"
            f"<td>{session_cell}</td>"
            f"<td class='num'>{_e(format_duration(round(s.wall_time_s * 1e9)))}</td>"
            f"<td class='num'>{s.steps}</td>"
            f"<td class='num'>{s.input_tokens + s.output_tokens}</td>"
            f"<td class='num'>{_e(format_cost(s.cost_usd)) if s.cost_usd else ''}</td>"
            f"<td>{_status_badge(s.status, s.errors)}</td></tr>"
        )
    table = (
        "<table class='runs'><thead><tr><th>Started (UTC)</th><th>Trace</th><th>Run</th>"
        "<th>Agent</th><th>Session</th><th>Time</th><th>Steps</th><th>Tokens</th><th>Cost</th>"
        f"<th>Status</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
        if rows
        else "<p class='empty'>No runs match.</p>"
    )
    where = f"<p class='where'>{_e(store_path)}</p>" if store_path else ""
    count = f"<p class='count'>{len(summaries)} run{'s' if len(summaries) != 1 else ''}</p>"
    return _page("Runs", f"<h1>Runs</h1>{where}{form}{count}{table}")


def graph_path(spans: Sequence[SpanRecord]) -> list[str]:
    """The nodes a run visited, in order: the ``keel.graph.path`` of its outermost agent run,
    else its ``node`` spans by start time."""
    for span in sorted(spans, key=lambda s: s.start_ns):
        path = span.attributes.get(sc.KEEL_GRAPH_PATH)
        if isinstance(path, list | tuple) and path:
            return [str(p) for p in path]
    nodes = [s for s in spans if isinstance(s.attributes.get(sc.KEEL_GRAPH_NODE), str)]
    return [str(s.attributes[sc.KEEL_GRAPH_NODE]) for s in sorted(nodes, key=lambda s: s.start_ns)]


def trace_page(spans: Sequence[SpanRecord]) -> str:
    """One trace: summary, graph path, span tree with a waterfall, and every span's details."""
    summary = summarize_trace(spans)
    ordered, depth = _tree_order(spans)
    start = min(s.start_ns for s in spans)
    total = max(1, max(s.end_ns for s in spans) - start)
    facts = [
        ("Status", _status_badge(summary.status, summary.errors)),
        ("Wall time", _e(format_duration(round(summary.wall_time_s * 1e9)))),
        ("Steps", str(summary.steps)),
        ("Model calls", str(summary.model_calls)),
        ("Tool calls", str(summary.tool_calls)),
        ("Tokens in / out", f"{summary.input_tokens} / {summary.output_tokens}"),
    ]
    if summary.cost_usd:
        facts.append(("Cost", _e(format_cost(summary.cost_usd))))
    if summary.agent_name:
        facts.append(("Agent", _e(summary.agent_name)))
    if summary.conversation_id:
        url = "/?" + urlencode({"session": summary.conversation_id})
        facts.append(("Session", f"<a href='{_e(url)}'>{_e(summary.conversation_id)}</a>"))
    facts_html = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts)
    path = graph_path(spans)
    path_html = (
        "<ol class='path'>" + "".join(f"<li>{_e(n)}</li>" for n in path) + "</ol>"
        if path
        else "<p class='empty'>This run visited no graph nodes.</p>"
    )
    rows = []
    for span in ordered:
        offset = (span.start_ns - start) / total * 1000
        width = max(2.0, span.duration_ns / total * 1000)
        indent = "<span class='indent'></span>" * min(depth[id(span)], 12)
        extras = " ".join(f"{k}={v}" for k, v in keel_attributes(span))
        tokens = _tokens(span)
        rows.append(
            f"<tr class='span-row{' failed' if span.status == 'error' else ''}'"
            f" data-span='{_e(span.span_id)}'>"
            f"<td class='name'>{indent}<a href='#span-{_e(span.span_id)}'>{_e(span.name)}</a>"
            + (
                f" <span class='err'>{_e(_error_message(span))}</span>"
                if span.status == "error"
                else ""
            )
            + (f"<div class='extras'>{indent}{_e(extras)}</div>" if extras else "")
            + "</td>"
            f"<td class='num'>{_e(format_duration(span.duration_ns))}</td>"
            f"<td class='num'>{_e(tokens)}</td>"
            "<td class='wf'><svg viewBox='0 0 1000 10' preserveAspectRatio='none'>"
            f"<rect x='{offset:.1f}' width='{width:.1f}' y='0' height='10'/></svg></td></tr>"
        )
    tree = (
        "<table class='tree'><thead><tr><th>Span</th><th>Time</th><th>Tokens</th>"
        f"<th>Timeline</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )
    details = "".join(_details(s, start) for s in ordered)
    body = (
        f"<p><a href='/'>&larr; All runs</a> &middot; "
        f"<a href='/api/trace/{_e(summary.trace_id)}.json'>JSON</a></p>"
        f"<h1>{_e(summary.root_name)}</h1><p class='trace-id'>trace {_e(summary.trace_id)} "
        f"&middot; started {_e(_time(summary.start_ns))} UTC</p>"
        f"<dl class='facts'>{facts_html}</dl>"
        f"<h2>Graph path</h2>{path_html}<h2>Spans</h2>{tree}"
        f"<h2>Span details</h2><p class='hint'>Click a span to see its attributes and events.</p>"
        f"{details}"
    )
    return _page(summary.root_name, body)


def not_found_page(message: str) -> str:
    return _page(
        "Not found", f"<h1>Not found</h1><p>{_e(message)}</p><p><a href='/'>All runs</a></p>"
    )


def _tokens(span: SpanRecord) -> str:
    i = span.int_attribute(sc.GEN_AI_USAGE_INPUT_TOKENS)
    o = span.int_attribute(sc.GEN_AI_USAGE_OUTPUT_TOKENS)
    if i is None and o is None:
        return ""
    return f"{i or 0} / {o or 0}"


def _error_message(span: SpanRecord) -> str:
    if span.status_message:
        return span.status_message
    for event in span.events:
        if event.name == "exception":
            return str(event.attributes.get("exception.message", "error"))
    return str(span.attributes.get(sc.ERROR_TYPE, "error"))


def _value(value: AttributeValue) -> str:
    if isinstance(value, str):
        text = value
        if text[:1] in "[{":  # captured content is JSON: show it indented
            with contextlib.suppress(ValueError):
                text = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
        return f"<pre>{_e(text)}</pre>"
    return f"<code>{_e(json.dumps(value, ensure_ascii=False))}</code>"


def _attribute_rows(attributes: Mapping[str, AttributeValue]) -> str:
    if not attributes:
        return "<p class='empty'>No attributes.</p>"
    rows = "".join(
        f"<tr><th>{_e(k)}</th><td>{_value(attributes[k])}</td></tr>" for k in sorted(attributes)
    )
    return f"<table class='attrs'>{rows}</table>"


def _details(span: SpanRecord, start: int) -> str:
    events = "".join(
        f"<li><strong>{_e(e.name)}</strong> at +{_e(format_duration(max(0, e.time_ns - start)))}"
        f"{_attribute_rows(e.attributes) if e.attributes else ''}</li>"
        for e in span.events
    )
    status = _e(span.status) + (f": {_e(span.status_message)}" if span.status_message else "")
    events_html = (
        f"<ul class='events'>{events}</ul>" if events else "<p class='empty'>No events.</p>"
    )
    return (
        f"<section class='details' id='span-{_e(span.span_id)}'>"
        f"<h3>{_e(span.name)}</h3>"
        f"<p>span {_e(span.span_id)} &middot; parent {_e(span.parent_span_id or '-')}"
        f" &middot; kind {_e(span.kind)} &middot; status <span class='status'>{status}</span>"
        f" &middot; {_e(format_duration(span.duration_ns))}</p>"
        f"<h4>Attributes</h4>{_attribute_rows(span.attributes)}"
        f"<h4>Events</h4>{events_html}"
        "</section>"
    )


def _tree_order(spans: Sequence[SpanRecord]) -> tuple[list[SpanRecord], dict[int, int]]:
    """Spans depth-first, children in start order; and each span's depth (keyed by id())."""
    ordered = sorted(spans, key=lambda s: (s.start_ns, -s.end_ns, s.span_id))
    ids = {s.span_id for s in ordered}
    children: defaultdict[str | None, list[SpanRecord]] = defaultdict(list)
    for span in ordered:
        parent = span.parent_span_id
        children[parent if parent in ids and parent != span.span_id else None].append(span)
    out: list[SpanRecord] = []
    depth: dict[int, int] = {}
    stack = [(s, 0) for s in reversed(children[None])]
    while stack:
        span, d = stack.pop()
        if id(span) in depth:
            continue
        depth[id(span)] = d
        out.append(span)
        stack.extend((c, d + 1) for c in reversed(children.get(span.span_id, [])))
    for span in ordered:  # parent links in a cycle: shown at the top rather than lost
        if id(span) not in depth:
            depth[id(span)] = 0
            out.append(span)
    return out, depth


def _short(value: str) -> str:
    return value if len(value) <= 16 else value[:15] + "…"


APP_CSS = """
:root { --fg:#1d2330; --muted:#667085; --line:#e4e7ec; --accent:#2f6fed; --err:#c0392b;
  --ok:#1e8e3e; --warn:#b7791f; --bg:#ffffff; --soft:#f6f8fb; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color:var(--fg);
  background:var(--bg); }
header.top { background:#111827; padding:10px 24px; }
header.top .brand { color:#fff; font-weight:600; text-decoration:none; }
main { padding:16px 24px 48px; max-width:1400px; }
h1 { font-size:22px; margin:8px 0; } h2 { font-size:16px; margin:24px 0 8px; }
a { color:var(--accent); }
.where, .trace-id, .hint, .count { color:var(--muted); margin:4px 0; }
form.filters { display:flex; flex-wrap:wrap; gap:12px; align-items:end; background:var(--soft);
  padding:10px 12px; border:1px solid var(--line); border-radius:6px; margin:12px 0; }
form.filters label { display:flex; flex-direction:column; font-size:12px; color:var(--muted); }
form.filters label.check { flex-direction:row; gap:6px; align-items:center; font-size:14px;
  color:var(--fg); }
form.filters input[type=text], form.filters input:not([type]) { padding:5px 8px;
  border:1px solid var(--line); border-radius:4px; min-width:180px; }
button { padding:6px 14px; border:0; border-radius:4px; background:var(--accent); color:#fff;
  cursor:pointer; }
table { border-collapse:collapse; width:100%; }
th, td { text-align:left; padding:6px 8px; border-bottom:1px solid var(--line);
  vertical-align:top; }
thead th { font-size:12px; color:var(--muted); font-weight:600; background:var(--soft); }
td.num { text-align:right; white-space:nowrap; font-variant-numeric:tabular-nums; }
tr.run.failed td.name, tr.span-row.failed td.name > a { color:var(--err); }
tr.span-row { cursor:pointer; } tr.span-row:hover, tr.run:hover { background:var(--soft); }
tr.span-row.selected { background:#e8f0fe; }
.badge { display:inline-block; padding:1px 8px; border-radius:10px; font-size:12px; color:#fff; }
.badge.ok { background:var(--ok); } .badge.error { background:var(--err); }
.badge.warn { background:var(--warn); }
.indent { display:inline-block; width:18px; }
.err { color:var(--err); font-size:12px; }
.extras { color:var(--muted); font-size:12px; margin-left:4px; }
td.wf { width:34%; min-width:200px; } td.wf svg { width:100%; height:10px; display:block;
  margin-top:5px; } td.wf rect { fill:var(--accent); }
tr.failed td.wf rect { fill:var(--err); }
dl.facts { display:grid; grid-template-columns:max-content 1fr; gap:4px 16px; margin:12px 0; }
dl.facts dt { color:var(--muted); } dl.facts dd { margin:0; }
ol.path { display:flex; flex-wrap:wrap; list-style:none; padding:0; margin:0; gap:6px; }
ol.path li { background:var(--soft); border:1px solid var(--line); border-radius:4px;
  padding:2px 8px; }
ol.path li + li::before { content:"\\2192"; margin-right:6px; color:var(--muted); }
section.details { display:none; border:1px solid var(--line); border-radius:6px;
  padding:8px 14px; margin:8px 0; background:var(--soft); }
section.details:target { display:block; }
table.attrs th { width:28%; font-weight:500; font-family:ui-monospace, monospace; font-size:12px; }
table.attrs pre { margin:0; white-space:pre-wrap; word-break:break-word; font-size:12px; }
.empty { color:var(--muted); }
"""

APP_JS = """
document.addEventListener("DOMContentLoaded", function () {
  var errors = document.getElementById("errors-only");
  if (errors) { errors.addEventListener("change", function () {
    document.getElementById("filters").submit(); }); }
  function select(id) {
    document.querySelectorAll("tr.span-row.selected").forEach(function (r) {
      r.classList.remove("selected"); });
    var row = document.querySelector('tr.span-row[data-span="' + id + '"]');
    if (row) { row.classList.add("selected"); }
  }
  document.querySelectorAll("tr.span-row").forEach(function (row) {
    row.addEventListener("click", function () {
      var id = row.getAttribute("data-span");
      if (/^[0-9a-f]{16}$/.test(id)) { location.hash = "span-" + id; select(id); }
    });
  });
  document.querySelectorAll("tr.run").forEach(function (row) {
    row.addEventListener("click", function (event) {
      if (event.target.closest("a")) { return; }
      var id = row.getAttribute("data-trace");
      if (/^[0-9a-f]{32}$/.test(id)) { location.href = "/trace/" + id; }
    });
  });
  var m = /^#span-([0-9a-f]{16})$/.exec(location.hash);
  if (m) { select(m[1]); }
});
"""
