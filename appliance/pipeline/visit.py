"""A visit's images → the outcome stage's decision."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from appliance.domain import ImageFinding, OctFinding, VisitOutcome
from appliance.outcome import RuleSet, decide


def visit_outcome(
    findings: Sequence[ImageFinding],
    rules: RuleSet,
    models_installed: bool,
    octs: Sequence[OctFinding] = (),
) -> VisitOutcome:
    return decide(list(findings), rules, models_installed=models_installed, octs=list(octs))


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


def oct_finding_from_json(data: dict[str, Any]) -> OctFinding:
    """An ``OctFinding`` as stored (``visits.OctRecord.finding``)."""
    values = dict(data)
    values["quality_reasons"] = tuple(values.get("quality_reasons") or ())
    values["human_grading"] = tuple(values.get("human_grading") or ())
    values["subfield_um"] = dict(values.get("subfield_um") or {})
    fovea = values.get("fovea_mm")
    values["fovea_mm"] = (float(fovea[0]), float(fovea[1])) if fovea else None
    return OctFinding(**values)
