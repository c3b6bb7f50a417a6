"""What the review desk shows: the visits waiting, one visit's eyes and photographs, the
reviews already signed. Plain records, read from rows; the desk (desks/review.py) fills them
and the sign-off (desks/signoff.py) checks a decision against them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from appliance.dicom.sr import OUTCOMES
from appliance.pipeline.eyes import EyeDecision

EYES = ("R", "L")
EYE_WORDS = {"R": "Right eye", "L": "Left eye"}
ACCEPTABLE = frozenset(OUTCOMES)  # what accept may confirm: refer, rescreen, retake, glaucoma_refer


@dataclass(frozen=True)
class ReviewRecord:
    id: int
    username: str
    decision: str
    outcome_code: str
    reason: str
    created_at: str
    sr_sop_instance_uid: str | None
    outcome_id: int | None  # the visit outcome row that was reviewed
    grades: dict[str, int] = field(default_factory=dict)  # the clinician's DR grades
    meaning: str = ""
    signer_name: str = ""  # as printed on the signed report
    credentials: str = ""
    pdf_sop_instance_uid: str | None = None
    oct_dme: dict[str, bool] = field(default_factory=dict)  # the clinician's OCT CI-DME answers

    @property
    def signer(self) -> str:
        """Who signed, as printed: "Dr A. Grader, MD" (the user name before full names)."""
        name = self.signer_name or self.username
        return f"{name}, {self.credentials}" if self.credentials else name


@dataclass(frozen=True)
class DocumentVersion:
    """One issued version of a visit's report: an SR or a PDF, preliminary (automated),
    signed (the first sign-off) or amended (a later one); every version is kept."""

    id: int  # derived_objects.id
    kind: str  # "sr" / "pdf"
    sop_instance_uid: str
    status: str  # "preliminary", "signed", "amended"
    created_at: str
    signer: str  # "Dr A. Grader, MD" for a signed one; "" for a preliminary one
    meaning: str
    current: bool  # the newest of its kind: what the station prints
    purged: bool  # its file was deleted after delivery (retention)


@dataclass(frozen=True)
class VisitSummary:
    visit_key: str
    outcome_id: int
    code: str
    text: str
    urgency: str
    complete: bool
    date: str  # ISO 8601 UTC of the newest analysis
    patient_id: str
    patient_name: str
    birth_date: str
    last_review: ReviewRecord | None

    @property
    def needs_review(self) -> bool:
        """Never signed, or new photographs changed the outcome since the last sign-off."""
        review = self.last_review
        return review is None or (review.outcome_id or 0) < self.outcome_id


@dataclass(frozen=True)
class ImageView:
    capture_id: int
    eye: str | None
    field: str | None
    received_at: str
    sop_instance_uid: str | None  # the DICOM image the SR references (received or OP)
    has_heatmap: bool
    result: dict[str, Any]  # the worker's stored per-image record
    decision: EyeDecision | None = None  # a person's decision on its eye (pipeline/eyes.py)


@dataclass(frozen=True)
class EyeView:
    eye: str
    status: str  # graded, ungradable, missing
    dr_grade: int | None
    referable: bool | None
    dme: bool | None
    cdr: float | None
    glaucoma_suspect: bool | None
    images: tuple[ImageView, ...]
    oct_status: str | None = None  # graded, human_grading, ungradable; None: no OCT
    oct_dme: bool | None = None  # the rules' centre-involving DME answer on OCT

    @property
    def name(self) -> str:
        return EYE_WORDS[self.eye]

    @property
    def has_gradable_oct(self) -> bool:
        """A gradable OCT volume: its CI-DME answer can be set by the clinician."""
        return self.oct_status in ("graded", "human_grading")

    @property
    def has_dicom(self) -> bool:
        return any(image.sop_instance_uid for image in self.images)

    @property
    def has_photo(self) -> bool:
        """A photograph as DICOM (received or wrapped): what a DR grade can be set on; an OCT
        volume alone is not one."""
        return any(i.sop_instance_uid and not i.result.get("oct") for i in self.images)


@dataclass(frozen=True)
class VisitDetail:
    summary: VisitSummary
    study_instance_uid: str
    rule_set: str
    prompts: tuple[str, ...]
    eyes: tuple[EyeView, ...]
    other_images: tuple[ImageView, ...]  # side unknown (e.g. not a fundus photograph)
    models: tuple[dict[str, Any], ...]
    preliminary_sr: str | None  # newest UNVERIFIED SR of the visit
    reviews: tuple[ReviewRecord, ...]  # newest first
    versions: tuple[DocumentVersion, ...] = ()  # every SR and PDF issued, newest first

    @property
    def can_accept(self) -> bool:
        return self.summary.code in ACCEPTABLE

    @property
    def signable(self) -> bool:
        return any(eye.has_dicom for eye in self.eyes)

    @property
    def sop_instance_uids(self) -> list[str]:
        """The DICOM images the page shows."""
        images = [i for eye in self.eyes for i in eye.images] + list(self.other_images)
        return [i.sop_instance_uid for i in images if i.sop_instance_uid]


def summary_from_row(row: dict[str, Any], review: ReviewRecord | None) -> VisitSummary:
    payload = json.loads(row["payload"])
    return VisitSummary(
        visit_key=row["visit_key"],
        outcome_id=int(row["id"]),
        code=row["code"],
        text=payload.get("text", ""),
        urgency=payload.get("urgency", ""),
        complete=bool(payload.get("complete")),
        date=row["created_at"],
        patient_id=row.get("patient_identifier") or "",
        patient_name=row.get("patient_name") or "",
        birth_date=row.get("birth_date") or "",
        last_review=review,
    )


def review_from_row(row: dict[str, Any]) -> ReviewRecord:
    payload = json.loads(row["payload"] or "{}")
    return ReviewRecord(
        id=int(row["id"]),
        username=row["username"],
        decision=row["decision"],
        outcome_code=row["outcome_code"],
        reason=row["reason"],
        created_at=row["created_at"],
        sr_sop_instance_uid=row["sr_sop_instance_uid"],
        outcome_id=payload.get("outcome_id"),
        grades={k: int(v) for k, v in (payload.get("grades") or {}).items()},
        meaning=row.get("meaning") or "",
        signer_name=row.get("signer_name") or "",
        credentials=row.get("signer_credentials") or "",
        pdf_sop_instance_uid=row.get("pdf_sop_instance_uid"),
        oct_dme={k: bool(v) for k, v in (payload.get("oct_dme") or {}).items()},
    )
