"""Versioned guideline rule files: load, validate strictly, and check they are safe to use.

A rule file is TOML (format in ``appliance/outcome/README.md``). Every problem is a
``ValueError`` whose message starts with the file and names the key, so a clinic admin can fix
it. Beyond the format, :func:`load_rules` checks the decisions against every possible visit
summary: some decision must apply to each, a referable finding must always give ``refer``, a
glaucoma suspect must always give a referral, ``rescreen`` only follows a complete, clear
visit, a photograph whose results were withheld for human grading never ends in ``rescreen``
(nor does ``human_grading`` answer a visit without one), ``no_model`` is the answer whenever no
model is installed, and no decision may be shadowed by earlier ones.
"""

from __future__ import annotations

import logging
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.outcome.conditions import (
    CONDITIONS,
    LEVELS,
    Condition,
    Facts,
    describe,
    matches,
    possible_facts,
)
from appliance.outcome.oct import OctRules, parse_oct

LOGGER = logging.getLogger(__name__)

DEFAULT_RULES = Path(__file__).with_name("rules") / "default.toml"

CODES: tuple[str, ...] = (
    "refer",
    "rescreen",
    "retake",
    "glaucoma_refer",
    "incomplete",
    "no_model",
    "human_grading",
)
URGENCIES: tuple[str, ...] = ("routine", "soon", "urgent")
FIELDS: tuple[str, ...] = ("macula", "disc", "any")
EYES: tuple[str, ...] = ("L", "R")
MAX_RECALL_MONTHS = 120
MAX_RETAKES = 10

_TOP_KEYS = {"rule_set", "protocol", "decision", "oct"}
_RULE_SET_KEYS = {"name", "version", "source"}
_PROTOCOL_KEYS = {"required_field", "eyes", "max_retakes"}
_DECISION_KEYS = {"code", "when", "text", "recall_months", "urgency"}


@dataclass(frozen=True)
class Decision:
    """One row of the ordered decision table: the first whose ``when`` matches is the outcome."""

    code: str
    when: tuple[Condition, ...]
    text: str
    recall_months: int | None
    urgency: str


@dataclass(frozen=True)
class RuleSet:
    name: str
    version: str
    source: str
    required_field: str  # "macula", "disc" or "any"
    eyes: tuple[str, ...]  # the eyes the protocol photographs, e.g. ("L", "R")
    max_retakes: int  # retakes of an ungradable eye before it is referred instead
    decisions: tuple[Decision, ...]
    path: str = ""  # the file it was loaded from
    oct: OctRules | None = None  # [oct]: CI-DME thresholds; None = OCTs need human grading

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}"


def load_rules(path: Path | None = None) -> RuleSet:
    """Load and check a rule file; ``None`` loads the shipped default."""
    where = DEFAULT_RULES if path is None else Path(path)
    try:
        text = where.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{where}: cannot read the rule file ({exc})") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{where}: not valid TOML ({exc})") from exc
    rules = _parse(data, str(where))
    _check_safety(rules, str(where))
    LOGGER.debug("loaded rule set %s from %s", rules.label, where)
    return rules


def _table(data: Mapping[str, Any], key: str, allowed: set[str], where: str) -> Mapping[str, Any]:
    value = data.get(key)
    if not isinstance(value, dict):
        raise ValueError(f"{where}: [{key}] is required and must be a table")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise ValueError(
            f"{where}: {key}.{unknown[0]} is not a known key (known: {', '.join(sorted(allowed))})"
        )
    return value


def _text(data: Mapping[str, Any], key: str, where: str, name: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}: {name}.{key} is required and must be a non-empty string")
    return value.strip()


def _choice(
    data: Mapping[str, Any], key: str, where: str, name: str, allowed: tuple[str, ...]
) -> str:
    value = data.get(key)
    if value not in allowed:
        raise ValueError(
            f"{where}: {name}.{key} must be one of {', '.join(allowed)}; got {value!r}"
        )
    return str(value)


def _count(value: Any, where: str, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(
            f"{where}: {name} must be a whole number from {low} to {high}; got {value!r}"
        )
    return value


def _parse(data: Mapping[str, Any], where: str) -> RuleSet:
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise ValueError(
            f"{where}: {unknown[0]} is not a known key (known: {', '.join(sorted(_TOP_KEYS))})"
        )
    head = _table(data, "rule_set", _RULE_SET_KEYS, where)
    name = _text(head, "name", where, "rule_set")
    version = _text(head, "version", where, "rule_set")
    for key, value in (("name", name), ("version", version)):
        if "@" in value or any(ch.isspace() for ch in value):
            raise ValueError(
                f"{where}: rule_set.{key} must not contain '@' or spaces; got {value!r}"
            )
    source = _text(head, "source", where, "rule_set")

    protocol = _table(data, "protocol", _PROTOCOL_KEYS, where)
    required_field = _choice(protocol, "required_field", where, "protocol", FIELDS)
    eyes = protocol.get("eyes")
    if (
        not isinstance(eyes, list)
        or not eyes
        or any(eye not in EYES for eye in eyes)
        or len(set(eyes)) != len(eyes)
    ):
        raise ValueError(f'{where}: protocol.eyes must list "L" and/or "R" once each; got {eyes!r}')
    if "max_retakes" not in protocol:
        raise ValueError(f"{where}: protocol.max_retakes is required")
    max_retakes = _count(protocol["max_retakes"], where, "protocol.max_retakes", 0, MAX_RETAKES)

    rows = data.get("decision")
    if not isinstance(rows, list) or not rows:
        raise ValueError(f"{where}: decision is required: at least one [[decision]] table")
    decisions = tuple(_decision(row, f"decision[{i}]", where) for i, row in enumerate(rows))
    for code in CODES:
        if not any(d.code == code for d in decisions):
            raise ValueError(f"{where}: decision: no [[decision]] with code = {code!r} (required)")
    return RuleSet(
        name=name,
        version=version,
        source=source,
        required_field=required_field,
        eyes=tuple(str(eye) for eye in eyes),
        max_retakes=max_retakes,
        decisions=decisions,
        path=where,
        oct=parse_oct(data, where),
    )


def _decision(row: Any, name: str, where: str) -> Decision:
    if not isinstance(row, dict):
        raise ValueError(f"{where}: {name} must be a table")
    unknown = sorted(set(row) - _DECISION_KEYS)
    if unknown:
        raise ValueError(
            f"{where}: {name}.{unknown[0]} is not a known key "
            f"(known: {', '.join(sorted(_DECISION_KEYS))})"
        )
    code = _choice(row, "code", where, name, CODES)
    text = _text(row, "text", where, name)
    urgency = _choice(row, "urgency", where, name, URGENCIES)
    recall: int | None = None
    if "recall_months" in row:
        recall = _count(row["recall_months"], where, f"{name}.recall_months", 1, MAX_RECALL_MONTHS)
    elif code == "rescreen":
        raise ValueError(f"{where}: {name}.recall_months is required for code 'rescreen'")
    when = row.get("when")
    if not isinstance(when, dict):
        raise ValueError(f"{where}: {name}.when is required and must be a table ({{}} = always)")
    conditions: list[Condition] = []
    for key, value in when.items():
        if key not in CONDITIONS:
            raise ValueError(
                f"{where}: {name}.when.{key} is not a known condition "
                f"(known: {', '.join(CONDITIONS)})"
            )
        if key == "any_eye":
            if value not in LEVELS:
                raise ValueError(
                    f"{where}: {name}.when.any_eye must be one of {', '.join(LEVELS)}; "
                    f"got {value!r}"
                )
        elif not isinstance(value, bool):
            raise ValueError(f"{where}: {name}.when.{key} must be true or false; got {value!r}")
        conditions.append((key, value))
    return Decision(code, tuple(conditions), text, recall, urgency)


def first_match(rules: RuleSet, facts: Facts) -> tuple[int, Decision] | None:
    """The first decision whose conditions hold, with its index."""
    for index, decision in enumerate(rules.decisions):
        if matches(decision.when, facts):
            return index, decision
    return None


def _problem(facts: Facts, code: str) -> str | None:
    if facts.no_model:
        return (
            None if code == "no_model" else "with no model installed the outcome must be no_model"
        )
    if facts.referable and code != "refer":
        return "a referable finding must give refer (put the referral decisions first)"
    if facts.glaucoma_suspect and code not in ("refer", "glaucoma_refer"):
        return "a glaucoma suspect must give refer or glaucoma_refer"
    if code == "rescreen" and not facts.all_graded:
        return "rescreen needs every required eye graded (all_eyes_graded = true)"
    if code == "rescreen" and facts.oct_ungradable:
        return "an OCT that is not gradable must never give rescreen"
    if code == "rescreen" and facts.human_grading:
        return "a photograph withheld for human grading must never give rescreen"
    if code == "human_grading" and not facts.human_grading:
        return "human_grading is only for visits with a withheld photograph"
    if code in ("no_model",):
        return "no_model is only for visits with no model installed (no_model = true)"
    return None


def _check_safety(rules: RuleSet, where: str) -> None:
    used: set[int] = set()
    for facts in possible_facts():
        found = first_match(rules, facts)
        if found is None:
            raise ValueError(
                f"{where}: decision: no decision applies when {describe(facts)}; "
                "end with a decision that covers the rest"
            )
        index, decision = found
        problem = _problem(facts, decision.code)
        if problem:
            raise ValueError(
                f"{where}: decision[{index}] (code {decision.code!r}) would apply when "
                f"{describe(facts)}: {problem}"
            )
        used.add(index)
    for index, decision in enumerate(rules.decisions):
        if index not in used:
            raise ValueError(
                f"{where}: decision[{index}] (code {decision.code!r}) can never apply: "
                "earlier decisions cover every visit it matches"
            )
