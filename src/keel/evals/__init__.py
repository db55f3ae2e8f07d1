"""Evaluation: datasets of cases, checks, probabilistic pass rates, baselines, record and replay.

A dataset (YAML or Python) names a target (the document-grounded agent, the tool-calling agent, a
plain model call, or any async function) and its cases; each case runs N times and passes when
the lower bound of its pass rate's Wilson interval clears its threshold. Names are imported on
first use, so ``import keel.evals`` loads no model, store or YAML parser.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from keel._lazy import lazy_exports

if TYPE_CHECKING:
    from keel.evals.checks import CheckResult, CitedSource, JudgeVerdict, Outcome, run_check
    from keel.evals.dataset import Case, Dataset, Defaults, load_dataset
    from keel.evals.record import (
        RecordedRun,
        RecordingModel,
        RecordingRetriever,
        RecordingToolRegistry,
        RecordStore,
        record_agent,
        record_ask,
    )
    from keel.evals.regression import compare
    from keel.evals.replay import ReplayModel, ReplayResult, replay_run
    from keel.evals.report import CaseResult, EvalReport, render_html, render_table
    from keel.evals.runner import SamplingModel, run_dataset, subject_for
    from keel.evals.stats import (
        fisher_exact_less,
        pass_hat_k,
        two_proportion_z_less,
        wilson_interval,
    )

__all__ = [
    "Case",
    "CaseResult",
    "CheckResult",
    "CitedSource",
    "Dataset",
    "Defaults",
    "EvalReport",
    "JudgeVerdict",
    "Outcome",
    "RecordStore",
    "RecordedRun",
    "RecordingModel",
    "RecordingRetriever",
    "RecordingToolRegistry",
    "ReplayModel",
    "ReplayResult",
    "SamplingModel",
    "compare",
    "fisher_exact_less",
    "load_dataset",
    "pass_hat_k",
    "record_agent",
    "record_ask",
    "render_html",
    "render_table",
    "replay_run",
    "run_check",
    "run_dataset",
    "subject_for",
    "two_proportion_z_less",
    "wilson_interval",
]

_WHERE = {
    "CheckResult": "keel.evals.checks",
    "CitedSource": "keel.evals.checks",
    "JudgeVerdict": "keel.evals.checks",
    "Outcome": "keel.evals.checks",
    "run_check": "keel.evals.checks",
    "Case": "keel.evals.dataset",
    "Dataset": "keel.evals.dataset",
    "Defaults": "keel.evals.dataset",
    "load_dataset": "keel.evals.dataset",
    "RecordStore": "keel.evals.record",
    "RecordedRun": "keel.evals.record",
    "RecordingModel": "keel.evals.record",
    "RecordingRetriever": "keel.evals.record",
    "RecordingToolRegistry": "keel.evals.record",
    "record_agent": "keel.evals.record",
    "record_ask": "keel.evals.record",
    "compare": "keel.evals.regression",
    "ReplayModel": "keel.evals.replay",
    "ReplayResult": "keel.evals.replay",
    "replay_run": "keel.evals.replay",
    "CaseResult": "keel.evals.report",
    "EvalReport": "keel.evals.report",
    "render_html": "keel.evals.report",
    "render_table": "keel.evals.report",
    "SamplingModel": "keel.evals.runner",
    "run_dataset": "keel.evals.runner",
    "subject_for": "keel.evals.runner",
    "fisher_exact_less": "keel.evals.stats",
    "pass_hat_k": "keel.evals.stats",
    "two_proportion_z_less": "keel.evals.stats",
    "wilson_interval": "keel.evals.stats",
}

__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
