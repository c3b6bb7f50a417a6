"""A person's decision on a photograph's eye, and what it changes in the visit's outcome.

A photograph whose given label (upload form, sidecar ``laterality``, DICOM ImageLaterality)
contradicts a confident detection counts for neither eye (outcome/decide.py) until a person
decides: keep the label, use the detected eye, relabel it, or exclude it. Any photograph may be
relabelled or excluded. Decisions are ``eye_decisions`` rows (append-only; the newest per
capture is in force); the outcome, the documents' ``owed`` check and the review and station
pages all read them from here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from appliance.domain import ImageFinding, OctFinding
from appliance.visits import ImageRecord

ACTIONS = ("keep_label", "use_detected", "relabel", "exclude")
ACTION_WORDS = {
    "keep_label": "label kept",
    "use_detected": "detected eye used",
    "relabel": "relabelled",
    "exclude": "excluded",
}


@dataclass(frozen=True)
class EyeDecision:
    id: int
    capture_pk: int
    action: str  # keep_label, use_detected, relabel, exclude
    eye: str | None  # "L" / "R"; None when excluded
    reason: str
    decided_by: str
    role: str
    decided_at: str

    @property
    def words(self) -> str:
        return ACTION_WORDS.get(self.action, self.action)


def in_force(db: Any, where: str, params: tuple[Any, ...]) -> dict[int, EyeDecision]:
    """The decision in force for each capture of a visit (``where`` on ``captures c``);
    ``db``: the store, a reader or a transaction's database."""
    rows = list(
        db.query(
            "SELECT d.* FROM eye_decisions d JOIN captures c ON c.id = d.capture_pk "
            f"WHERE {where} AND d.id = (SELECT max(id) FROM eye_decisions "
            "WHERE capture_pk = d.capture_pk)",
            params,
        )
    )
    return {int(row["capture_pk"]): EyeDecision(**row) for row in rows}


def of_captures(db: Any, capture_ids: Iterable[int]) -> dict[int, EyeDecision]:
    """The decision in force for each of ``capture_ids`` that has one."""
    ids = sorted({int(i) for i in capture_ids})
    if not ids:
        return {}
    marks = ", ".join("?" for _ in ids)
    return in_force(db, f"c.id IN ({marks})", tuple(ids))


def apply(finding: ImageFinding, decision: EyeDecision | None) -> ImageFinding | None:
    """The finding as the outcome counts it: the decided eye (no longer in question), or
    None when the photograph is excluded."""
    if decision is None:
        return finding
    if decision.action == "exclude" or decision.eye is None:
        return None
    return replace(finding, laterality=decision.eye, laterality_mismatch=False)


def apply_oct(finding: OctFinding, decision: EyeDecision | None) -> OctFinding | None:
    """An OCT volume as the outcome counts it: the decided eye, or None when excluded. (The
    ETDRS quadrants were measured for the eye the object named; the central subfield and the
    fluid there do not depend on it.)"""
    if decision is None:
        return finding
    if decision.action == "exclude" or decision.eye is None:
        return None
    return replace(finding, laterality=decision.eye)


def counted_eye(record: ImageRecord, decision: EyeDecision | None) -> str | None:
    """The eye a stored photograph counts for: the decided one; none when excluded or while
    its label contradicts the detected eye; else its label (or detected eye)."""
    if decision is not None:
        return decision.eye
    if record.laterality_mismatch:
        return None
    return record.laterality


def in_question(record: ImageRecord, decision: EyeDecision | None) -> bool:
    """The label contradicts the detected eye and nobody has decided yet."""
    return decision is None and record.laterality_mismatch


def latest(db: Any, where: str, params: tuple[Any, ...]) -> str:
    """When the newest decision on any of a visit's photographs was taken ('' when none):
    a document made before it no longer says what the visit is."""
    rows = list(
        db.query(
            "SELECT max(d.decided_at) AS latest FROM eye_decisions d "
            f"JOIN captures c ON c.id = d.capture_pk WHERE {where}",
            params,
        )
    )
    return str(rows[0]["latest"] or "") if rows else ""
