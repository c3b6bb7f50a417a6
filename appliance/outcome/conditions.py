"""The visit summary a rule file's ``when`` conditions are written against.

A decision's ``when`` table names conditions from :data:`CONDITIONS`; it matches when every
named condition holds (an empty table always matches). :func:`possible_facts` lists every
summary a visit can produce, so a rule file can be checked for gaps and unsafe orders before
it is ever used.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from dataclasses import dataclass, fields

LOGGER = logging.getLogger(__name__)

# ICDR severity levels by name; ``any_eye = "<level>"`` holds when an eye is at that level or worse.
LEVELS: dict[str, int] = {
    "none": 0,
    "mild": 1,
    "moderate": 2,
    "severe": 3,
    "proliferative": 4,
}

Condition = tuple[str, bool | str]


@dataclass(frozen=True)
class Facts:
    """What a visit's photographs showed, reduced to the terms the rule file uses."""

    no_model: bool  # no DR screening model installed: images were checked for quality only
    worst_grade: int | None  # highest ICDR grade on any gradable photograph, None when none
    referable: bool  # a gradable photograph is referable (flag, DME, or grade >= 2)
    dme: bool  # a gradable photograph shows diabetic macular oedema
    glaucoma_suspect: bool  # a gradable photograph is a glaucoma suspect
    ungradable: bool  # a required eye has only ungradable photographs of the required field
    missing: bool  # a required eye has no photograph of the required field (or is unresolved)
    retakes_exhausted: bool  # an ungradable eye (photographs or OCT) failed more than max_retakes
    all_graded: bool  # every required eye is graded and has a screening result
    human_grading: bool  # a gradable photograph's (or OCT's) results were withheld for a person
    ci_dme: bool  # a gradable OCT shows centre-involving DME (CST over the device threshold, or
    #              fluid in the central subfield)
    oct_ungradable: bool  # an eye's OCT volumes are all ungradable


# Condition name -> (Facts attribute, type of the value in the rule file).
CONDITIONS: dict[str, tuple[str, type]] = {
    "no_model": ("no_model", bool),
    "any_eye": ("worst_grade", str),
    "any_eye_referable": ("referable", bool),
    "any_eye_dme": ("dme", bool),
    "any_eye_glaucoma_suspect": ("glaucoma_suspect", bool),
    "any_eye_ungradable": ("ungradable", bool),
    "any_eye_missing": ("missing", bool),
    "retakes_exhausted": ("retakes_exhausted", bool),
    "all_eyes_graded": ("all_graded", bool),
    "any_image_needs_human_grading": ("human_grading", bool),
    "any_eye_ci_dme": ("ci_dme", bool),
    "any_oct_ungradable": ("oct_ungradable", bool),
}


def holds(name: str, value: bool | str, facts: Facts) -> bool:
    """Whether one condition of a ``when`` table holds for ``facts``."""
    attribute, _ = CONDITIONS[name]
    if name == "any_eye":
        grade = facts.worst_grade
        return grade is not None and grade >= LEVELS[str(value)]
    return bool(getattr(facts, attribute)) is value


def matches(when: tuple[Condition, ...], facts: Facts) -> bool:
    """Whether every condition holds (an empty ``when`` always matches)."""
    return all(holds(name, value, facts) for name, value in when)


def consistent(facts: Facts) -> bool:
    """Whether a visit could really produce this summary."""
    return not (
        (facts.worst_grade is not None and facts.worst_grade >= 2 and not facts.referable)
        or (facts.dme and not facts.referable)
        or (facts.ci_dme and not facts.dme)
        or (facts.retakes_exhausted and not (facts.ungradable or facts.oct_ungradable))
        or (facts.all_graded and (facts.ungradable or facts.missing))
        or (facts.no_model and facts.human_grading)
        or (
            facts.no_model
            and (
                facts.worst_grade is not None
                or facts.referable
                or facts.dme
                or facts.ci_dme
                or facts.glaucoma_suspect
                or facts.all_graded
            )
        )
    )


def possible_facts() -> Iterator[Facts]:
    """Every consistent visit summary (a few hundred)."""
    flags = [f.name for f in fields(Facts) if f.name != "worst_grade"]
    grades: list[int | None] = [None, *LEVELS.values()]
    for grade in grades:
        for values in itertools.product((False, True), repeat=len(flags)):
            facts = Facts(worst_grade=grade, **dict(zip(flags, values, strict=True)))
            if consistent(facts):
                yield facts


def describe(facts: Facts) -> str:
    """The summary in rule-file terms, for error messages."""
    parts = []
    for name, (attribute, _) in CONDITIONS.items():
        value = getattr(facts, attribute)
        if name == "any_eye":
            level = next((k for k, v in LEVELS.items() if v == value), None)
            parts.append(f"any_eye={level or 'no grade'}")
        else:
            parts.append(f"{name}={'true' if value else 'false'}")
    return ", ".join(parts)
