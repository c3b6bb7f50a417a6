"""Outcome stage: versioned guideline rules → per-eye summaries and the visit's decision."""

from appliance.outcome.decide import decide, per_eye
from appliance.outcome.rules import CODES, URGENCIES, Decision, RuleSet, load_rules

__all__ = ["CODES", "URGENCIES", "Decision", "RuleSet", "decide", "load_rules", "per_eye"]
