"""Prompt-injection defence by design: provenance labels, policy on every tool call, privilege
separation (plan-then-execute with a quarantined reader), action validators and input screening.

Names are imported lazily, so ``import keel.guard`` is cheap; ``PlanExecuteAgent`` (a graph)
loads ``keel.graph`` only when used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from keel._lazy import lazy_exports

if TYPE_CHECKING:
    from keel.guard.guard import Approver, Guard
    from keel.guard.plan_execute import (
        Plan,
        PlanExecuteAgent,
        PlanState,
        QueryStep,
        ToolStep,
        quarantined_query,
    )
    from keel.guard.policy import (
        DEFAULT_RULES,
        CallFacts,
        Decision,
        Policy,
        Rule,
        ToolOverride,
        Verdict,
        load_policy,
        parse_policy,
    )
    from keel.guard.provenance import (
        Labelled,
        Provenance,
        Source,
        argument_labels,
        context_label,
        provenance_of,
    )
    from keel.guard.screening import (
        Classifier,
        Finding,
        InjectionDetector,
        ModelClassifier,
        Screening,
    )
    from keel.guard.validators import ActionValidator, UrlAllowList

_WHERE = {
    "Approver": "keel.guard.guard",
    "Guard": "keel.guard.guard",
    "Plan": "keel.guard.plan_execute",
    "PlanExecuteAgent": "keel.guard.plan_execute",
    "PlanState": "keel.guard.plan_execute",
    "QueryStep": "keel.guard.plan_execute",
    "ToolStep": "keel.guard.plan_execute",
    "quarantined_query": "keel.guard.plan_execute",
    "DEFAULT_RULES": "keel.guard.policy",
    "CallFacts": "keel.guard.policy",
    "Decision": "keel.guard.policy",
    "Policy": "keel.guard.policy",
    "Rule": "keel.guard.policy",
    "ToolOverride": "keel.guard.policy",
    "Verdict": "keel.guard.policy",
    "load_policy": "keel.guard.policy",
    "parse_policy": "keel.guard.policy",
    "Labelled": "keel.guard.provenance",
    "Provenance": "keel.guard.provenance",
    "Source": "keel.guard.provenance",
    "argument_labels": "keel.guard.provenance",
    "context_label": "keel.guard.provenance",
    "provenance_of": "keel.guard.provenance",
    "Classifier": "keel.guard.screening",
    "Finding": "keel.guard.screening",
    "InjectionDetector": "keel.guard.screening",
    "ModelClassifier": "keel.guard.screening",
    "Screening": "keel.guard.screening",
    "ActionValidator": "keel.guard.validators",
    "UrlAllowList": "keel.guard.validators",
}

__all__ = [
    "ActionValidator",
    "Approver",
    "CallFacts",
    "Classifier",
    "DEFAULT_RULES",
    "Decision",
    "Finding",
    "Guard",
    "InjectionDetector",
    "Labelled",
    "ModelClassifier",
    "Plan",
    "PlanExecuteAgent",
    "PlanState",
    "Policy",
    "Provenance",
    "QueryStep",
    "Rule",
    "Screening",
    "Source",
    "ToolOverride",
    "ToolStep",
    "UrlAllowList",
    "Verdict",
    "argument_labels",
    "context_label",
    "load_policy",
    "parse_policy",
    "provenance_of",
    "quarantined_query",
]

__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
