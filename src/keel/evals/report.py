"""Eval results: per-case pass rates with confidence intervals, pass^k, the verdict, and the
comparison with a baseline; rendered as a terminal table or a self-contained HTML page.

An ``EvalReport`` saved as JSON is also a baseline (``keel eval --save-baseline``).
"""

from __future__ import annotations

import html
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationError

from keel.errors import DatasetError

__all__ = ["CaseResult", "Comparison", "EvalReport", "RunRecord", "render_html", "render_table"]


class RunRecord(BaseModel):
    """One run of a case: passed or not, why not, and (the start of) what it answered."""

    passed: bool
    failures: list[str] = Field(default_factory=list)
    output: str = ""
    error: str | None = None
    run_id: str | None = None
    """The recording of this run, when the eval recorded runs (``keel replay RUN``)."""


class Comparison(BaseModel):
    """This case against the baseline: the one-sided test of "lower than the baseline"."""

    baseline_passes: int
    baseline_runs: int
    p_value: float
    regressed: bool
    improved: bool = False


class CaseResult(BaseModel):
    id: str
    prompt: str
    runs: int
    passes: int
    threshold: float
    pass_rate: float
    ci_low: float
    ci_high: float
    pass_k: float
    k: int
    passed: bool
    """The lower bound of the pass rate's confidence interval is at least the threshold."""
    records: list[RunRecord] = Field(default_factory=list)
    comparison: Comparison | None = None

    @property
    def verdict(self) -> Literal["pass", "fail", "regressed"]:
        if self.comparison is not None and self.comparison.regressed:
            return "regressed"
        return "pass" if self.passed else "fail"


class EvalReport(BaseModel):
    dataset: str
    description: str = ""
    model: str
    target: str
    created: float = Field(default_factory=time.time)
    confidence: float
    temperature: float | None = None
    duration_s: float = 0.0
    cases: list[CaseResult]
    regression_test: str | None = None
    """Which test decided regressions, e.g. "Fisher's exact test, one-sided"."""
    alpha: float | None = None
    baseline: str | None = None

    @property
    def failed(self) -> list[CaseResult]:
        return [c for c in self.cases if not c.passed]

    @property
    def regressed(self) -> list[CaseResult]:
        return [c for c in self.cases if c.verdict == "regressed"]

    @property
    def ok(self) -> bool:
        return not self.failed and not self.regressed

    @property
    def runs(self) -> int:
        return sum(c.runs for c in self.cases)

    @property
    def passes(self) -> int:
        return sum(c.passes for c in self.cases)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.model_dump_json(indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> EvalReport:
        """A saved report (a baseline); a bad file is a ``DatasetError`` naming it."""
        try:
            return cls.model_validate_json(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DatasetError(f"baseline file not found: {path}") from None
        except (OSError, UnicodeDecodeError) as e:
            raise DatasetError(f"cannot read baseline {path}: {e}") from None
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "(top level)"
            raise DatasetError(f"{path}: not an eval report: {where}: {first['msg']}") from None

    def summary(self) -> str:
        """One line: cases passed, runs passed, regressions, and what decided them."""
        line = (
            f"{len(self.cases) - len(self.failed)}/{len(self.cases)} cases passed "
            f"({self.passes}/{self.runs} runs) at {self.confidence:.0%} confidence"
        )
        if self.regression_test is not None and self.alpha is not None:
            line += (
                f"; {len(self.regressed)} regressed against {self.baseline} "
                f"({self.regression_test}, alpha {self.alpha:g}: "
                f"{1 - self.alpha:.0%} confidence)"
            )
        return line


def _p(x: float) -> str:
    return f"{x:.0%}"


def _comparison(case: CaseResult) -> str:
    c = case.comparison
    if c is None:
        return ""
    return f"{c.baseline_passes}/{c.baseline_runs} p={c.p_value:.3f}"


def render_table(report: EvalReport) -> object:
    """A rich ``Table`` of the report (imported lazily; rich is a core dependency)."""
    from rich.table import Table

    table = Table(
        title=f"{report.dataset} · {report.model}",
        caption=report.summary(),
        title_justify="left",
    )
    table.add_column("case", overflow="fold")
    table.add_column("passes", justify="right")
    table.add_column("pass rate", justify="right")
    table.add_column(f"{report.confidence:.0%} CI", justify="right")
    table.add_column("pass^k", justify="right")
    table.add_column("threshold", justify="right")
    if report.regression_test is not None:
        table.add_column("baseline", justify="right")
    table.add_column("verdict")
    style = {"pass": "green", "fail": "bold red", "regressed": "bold magenta"}
    for case in report.cases:
        row = [
            case.id,
            f"{case.passes}/{case.runs}",
            _p(case.pass_rate),
            f"{_p(case.ci_low)}-{_p(case.ci_high)}",
            f"{case.pass_k:.2f} (k={case.k})",
            _p(case.threshold),
        ]
        if report.regression_test is not None:
            row.append(_comparison(case))
        row.append(f"[{style[case.verdict]}]{case.verdict}[/]")
        table.add_row(*row)
    return table


_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;width:100%}th,td{padding:.35em .6em;border-bottom:1px solid #ddd;
text-align:left;vertical-align:top}th{background:#f4f4f4}td.n{text-align:right;white-space:nowrap}
.pass{color:#176f2c;font-weight:600}.fail{color:#b3261e;font-weight:700}
.regressed{color:#7a1fa2;font-weight:700}.bar{position:relative;height:10px;width:140px;
background:#eee;border-radius:3px}.ci{position:absolute;height:10px;background:#9ecae1}
.rate{position:absolute;width:2px;height:14px;top:-2px;background:#08519c}
.thr{position:absolute;width:2px;height:14px;top:-2px;background:#b3261e}
details pre{white-space:pre-wrap;background:#fafafa;padding:.5em;margin:.3em 0}
small{color:#666}
"""


def _bar(case: CaseResult) -> str:
    left, width = case.ci_low * 100, (case.ci_high - case.ci_low) * 100
    return (
        f'<div class="bar" title="CI {_p(case.ci_low)} to {_p(case.ci_high)}">'
        f'<div class="ci" style="left:{left:.1f}%;width:{width:.1f}%"></div>'
        f'<div class="rate" style="left:{case.pass_rate * 100:.1f}%"></div>'
        f'<div class="thr" style="left:{case.threshold * 100:.1f}%"></div></div>'
    )


def _runs(case: CaseResult) -> str:
    items = []
    for r in case.records:
        status = "pass" if r.passed else "fail"
        why = "; ".join(r.failures) or (r.error or "")
        run = f" · run {html.escape(r.run_id[:12])}" if r.run_id else ""
        items.append(
            f'<li><span class="{status}">{status}</span>{run} {html.escape(why)}'
            f"<pre>{html.escape(r.output)}</pre></li>"
        )
    return (
        f"<details><summary>{len(case.records)} runs</summary><ol>{''.join(items)}</ol></details>"
    )


def render_html(report: EvalReport) -> str:
    """The report as one self-contained HTML page (inline CSS, every value escaped)."""
    e = html.escape
    head = [
        "case",
        "passes",
        "pass rate",
        f"{report.confidence:.0%} CI",
        "interval",
        "pass^k",
        "threshold",
    ]
    if report.regression_test is not None:
        head.append("baseline")
    head += ["verdict", "runs"]
    rows = []
    for c in report.cases:
        cells = [
            f"<td><b>{e(c.id)}</b><br><small>{e(c.prompt)}</small></td>",
            f'<td class="n">{c.passes}/{c.runs}</td>',
            f'<td class="n">{_p(c.pass_rate)}</td>',
            f'<td class="n">{_p(c.ci_low)}&ndash;{_p(c.ci_high)}</td>',
            f"<td>{_bar(c)}</td>",
            f'<td class="n">{c.pass_k:.2f} (k={c.k})</td>',
            f'<td class="n">{_p(c.threshold)}</td>',
        ]
        if report.regression_test is not None:
            cells.append(f'<td class="n">{e(_comparison(c))}</td>')
        cells += [f'<td class="{c.verdict}">{c.verdict}</td>', f"<td>{_runs(c)}</td>"]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    created = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(report.created))
    temperature = "model default" if report.temperature is None else f"{report.temperature:g}"
    meta = (
        f"model <b>{e(report.model)}</b> · target {e(report.target)} · temperature "
        f"{e(temperature)} · {created} · {report.duration_s:.1f} s"
    )
    return (
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
        f"<title>Keel eval: {e(report.dataset)}</title><style>{_CSS}</style></head><body>"
        f"<h1>Eval: {e(report.dataset)}</h1><p>{e(report.description)}</p><p>{meta}</p>"
        f"<p><b>{e(report.summary())}</b></p>"
        "<p><small>A case passes when the lower bound of its pass rate's Wilson score interval "
        "is at least its threshold (red mark); the blue band is the interval, the dark mark "
        "the observed rate. pass^k estimates the chance that k runs in a row all pass."
        "</small></p>"
        f"<table><thead><tr>{''.join(f'<th>{e(h)}</th>' for h in head)}</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
        "</body></html>\n"
    )
