"""A visit's images → the outcome stage's decision."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from appliance.domain import ImageFinding, VisitOutcome
from appliance.outcome import RuleSet, decide


def visit_outcome(
    findings: Sequence[ImageFinding], rules: RuleSet, models_installed: bool
) -> VisitOutcome:
    return decide(list(findings), rules, models_installed=models_installed)


def outcome_json(outcome: VisitOutcome) -> dict[str, Any]:
    return {
        "code": outcome.code,
        "text": outcome.text,
        "recall_months": outcome.recall_months,
        "urgency": outcome.urgency,
        "complete": outcome.complete,
        "prompts": list(outcome.prompts),
        "rule_set": outcome.rule_set,
        "eyes": [asdict(eye) for eye in outcome.eyes],
    }


def finding_from_json(data: dict[str, Any]) -> ImageFinding:
    values = dict(data)
    values["quality_reasons"] = tuple(values.get("quality_reasons") or ())
    values["human_grading"] = tuple(values.get("human_grading") or ())
    return ImageFinding(**values)
