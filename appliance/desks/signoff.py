"""A clinician's sign-off: the checks on what they sent, and the VERIFIED SR it issues.

``check`` turns the form into an outcome code, per-eye DR grades and a reason (and
``check_oct_dme`` the per-eye centre-involving DME answers on OCT), or refuses with
a message a person can act on: accept needs a complete automated outcome (refer, rescreen,
retake, glaucoma_refer) and no changes; override needs a reason and an outcome (refer, rescreen
or retake; glaucoma_refer may be kept), a grade only for an eye that has a photograph, and
never "rescreen" next to a referable grade. ``verified_sr`` builds the re-issue (dicom/sr.py):
same study, the clinician as Verifying Observer (their full name as a PN, the clinic as
Verifying Organization), the predecessors' series, the next instance number and the same
Device Observer UID. What a signature means and who may sign: desks/signers.py.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydicom.dataset import Dataset

from appliance import __version__
from appliance.desks.review_views import ACCEPTABLE, EYE_WORDS, VisitDetail, VisitSummary
from appliance.desks.signers import OUTCOME_WORDS, oct_dme_words, person_name
from appliance.dicom.op import new_uid
from appliance.dicom.sr import OUTCOMES, device_observer_uid, screening_sr
from appliance.dicom.sr_oct import OctReport
from appliance.errors import RejectedInput
from appliance.pipeline.documents import DEVICE

OVERRIDE_OUTCOMES = ("refer", "rescreen", "retake")  # what an override may set
MAX_REASON = 2000
DEVICE_OBSERVER_UID = "121012"


@dataclass(frozen=True)
class Decision:
    """What the clinician sent. ``grades``: eye → ICDR grade 0-4 they set (override only)."""

    decision: str
    outcome_code: str = ""
    reason: str = ""
    grades: Mapping[str, int] = field(default_factory=dict)
    outcome_id: int | None = None  # the outcome the page showed (stale-page check)
    oct_dme: Mapping[str, bool] = field(default_factory=dict)  # eye → CI-DME on OCT (override)


@dataclass(frozen=True)
class Signed:
    review_id: int
    sr_sop_instance_uid: str
    predecessors: tuple[str, ...]  # the SRs the verified SR replaces
    outcome_code: str
    queued: int  # outbox jobs added (SR and PDF, per destination)
    pdf_sop_instance_uid: str = ""
    pdf_predecessors: tuple[str, ...] = ()
    meaning: str = ""


@dataclass(frozen=True)
class Signature:
    """What a clinician signs: the visit, what it showed them, and their checked decision."""

    visit_key: str
    summary: VisitSummary
    decision: str
    outcome_code: str
    grades: dict[str, int]
    reason: str
    user_pk: int
    username: str
    address: str
    signer_name: str = ""  # the full name printed (21 CFR 11.50)
    credentials: str = ""
    meaning: str = ""  # desks/signers.py MEANINGS
    oct_dme: dict[str, bool] = field(default_factory=dict)  # eye → the clinician's OCT CI-DME

    @property
    def decision_words(self) -> str:
        """The clinician's decision as printed in the signed report's signer block."""
        if self.decision == "accept":
            return f"Accepted the automated result: {self.summary.text.rstrip('.')}."
        words = f"Overrode the automated result: {OUTCOME_WORDS.get(self.outcome_code, '')}."
        for eye, value in sorted(self.oct_dme.items(), reverse=True):  # right eye first
            words += f" {oct_dme_words(eye, value)}."
        return f"{words} Reason: {self.reason}" if self.reason else words

    def review_row(self, sr_uid: str, previous: tuple[str, ...], now: str) -> dict[str, Any]:
        """The ``reviews`` row (the signed PDF's UID is added by the caller)."""
        return {
            "visit_key": self.visit_key,
            "user_pk": self.user_pk,
            "decision": self.decision,
            "outcome_code": self.outcome_code,
            "reason": self.reason,
            "meaning": self.meaning,
            "signer_name": self.signer_name,
            "signer_credentials": self.credentials,
            "payload": json.dumps(
                {
                    "outcome_id": self.summary.outcome_id,
                    "model_outcome": self.summary.code,
                    "grades": self.grades,
                    "oct_dme": self.oct_dme,  # eye → centre-involving DME on OCT (override)
                    "predecessors": list(previous),
                }
            ),
            "sr_sop_instance_uid": sr_uid,
            "created_at": now,
        }

    def audit_detail(self, sr_uid: str, previous: tuple[str, ...], queued: int) -> dict[str, Any]:
        """What the sign-off's audit event says (``events.review_signed`` adds the stage)."""
        return {
            "visit": self.visit_key,
            "decision": self.decision,
            "reason": self.reason,
            "model_outcome": self.summary.code,
            "outcome": self.outcome_code,
            "grades": self.grades,
            "oct_dme": self.oct_dme,
            "verified_sr": sr_uid,
            "predecessors": list(previous),
            "queued": queued,
            "meaning": self.meaning,
            "signer_name": self.signer_name,
            "signer_credentials": self.credentials,
            "password_reentered": True,
        }


def check(choice: Decision, detail: VisitDetail) -> tuple[str, dict[str, int], str]:
    """The outcome code, the clinician's grades and the reason, or a RejectedInput saying why."""
    reason = (choice.reason or "").strip()
    if len(reason) > MAX_REASON:
        raise RejectedInput(f"The reason is too long (at most {MAX_REASON} characters).")
    model = detail.summary.code
    if choice.decision == "accept":
        if not detail.can_accept:
            raise RejectedInput(
                f"There is no complete automated result to accept (the visit is '{model}'). "
                "Choose Override, set the outcome and give a reason."
            )
        if choice.grades or choice.outcome_code not in ("", model):
            raise RejectedInput(
                "You changed the outcome or a DR grade: choose Override and give a reason, "
                "or leave them unchanged to accept."
            )
        return model, {}, reason
    if choice.decision != "override":
        raise RejectedInput("Choose Accept or Override.")
    if not reason:
        raise RejectedInput("A reason is required to override the automated result.")
    outcome = choice.outcome_code or (model if model in ACCEPTABLE else "")
    if outcome not in OVERRIDE_OUTCOMES and not (outcome == model and model in ACCEPTABLE):
        raise RejectedInput("Choose the outcome: refer, rescreen or retake.")
    eyes = {eye.eye: eye for eye in detail.eyes}
    grades: dict[str, int] = {}
    for eye, grade in choice.grades.items():
        if eye not in eyes:
            raise RejectedInput(f"Unknown eye {eye!r}.")
        if not isinstance(grade, int) or not 0 <= grade <= 4:
            raise RejectedInput("A DR grade is 0 (none) to 4 (proliferative).")
        if not eyes[eye].has_photo:
            raise RejectedInput(f"{EYE_WORDS[eye]}: no photograph, so no DR grade can be set.")
        grades[eye] = grade
    if outcome == "rescreen":
        for view in detail.eyes:
            final = grades.get(view.eye, view.dr_grade)
            if final is not None and final >= 2:
                raise RejectedInput(
                    f"Rescreen contradicts a referable DR grade (moderate or worse) in the "
                    f"{EYE_WORDS[view.eye].lower()}: change the grade or the outcome."
                )
    return outcome, grades, reason


def with_oct_dme(outcome_payload: str, oct_dme: Mapping[str, bool]) -> list[dict[str, Any]]:
    """The outcome's per-eye JSON with the signing clinician's centre-involving DME answers on
    OCT in place of the rules' (what the VERIFIED SR's OCT groups say)."""
    return [
        {**eye, "oct_dme": oct_dme[eye["eye"]]} if eye.get("eye") in oct_dme else eye
        for eye in json.loads(outcome_payload)["eyes"]
    ]


def check_oct_dme(choice: Decision, detail: VisitDetail, outcome: str) -> dict[str, bool]:
    """The clinician's centre-involving DME answers on OCT (eye → yes / no), or a
    RejectedInput: only when overriding, only for an eye with a gradable OCT volume, and never
    "rescreen" next to centre-involving DME (the clinician's answer, else the rules')."""
    answers: dict[str, bool] = {}
    if choice.oct_dme and choice.decision != "override":
        raise RejectedInput(
            "You changed an OCT macular oedema answer: choose Override and give a reason, "
            "or leave it unchanged to accept."
        )
    eyes = {eye.eye: eye for eye in detail.eyes}
    for eye, value in choice.oct_dme.items():
        if eye not in eyes:
            raise RejectedInput(f"Unknown eye {eye!r}.")
        if not isinstance(value, bool):
            raise RejectedInput("The OCT macular oedema answer is yes or no.")
        if not eyes[eye].has_gradable_oct:
            raise RejectedInput(
                f"{EYE_WORDS[eye]}: no gradable OCT volume, so no macular oedema answer on "
                "OCT can be set."
            )
        answers[eye] = value
    if outcome == "rescreen":
        for view in detail.eyes:
            if answers.get(view.eye, view.oct_dme) is True:
                raise RejectedInput(
                    "Rescreen contradicts centre-involving macular oedema on OCT in the "
                    f"{EYE_WORDS[view.eye].lower()}: change the answer or the outcome."
                )
    return answers


def signed_findings(
    eyes_findings: dict[str, dict[str, Any]], grades: Mapping[str, int]
) -> dict[str, dict[str, Any]]:
    """The SR's per-eye findings with the clinician's DR grades (referable follows the grade)."""
    findings = {eye: dict(values) for eye, values in eyes_findings.items()}
    for eye, grade in grades.items():
        values = findings.setdefault(eye, {"dme": None, "cdr": None, "glaucoma_suspect": None})
        values.update(
            dr_grade=grade,
            referable=grade >= 2 or values.get("dme") is True,
            gradable=True,  # the clinician graded it
            overridden=True,
        )
    return findings


def verified_sr(
    *,
    images: Sequence[Mapping[str, Any]],
    evidence: tuple[list[Dataset], Sequence[OctReport]],
    findings: dict[str, dict[str, Any]],
    predecessors: Sequence[Dataset],
    signer_name: str,
    organization: str,
    decision: str,
    outcome_code: str,
    reason: str,
    uid_root: str,
    moment: datetime | None = None,
    device: Mapping[str, str] = DEVICE,
) -> Dataset:
    """The VERIFIED SR (newest predecessor first in ``predecessors``; none is allowed);
    ``evidence``: the photographs' headers and the OCT groups (``VisitSources.sr_images``);
    ``device``: the appliance (``oct_documents.appliance_device``)."""
    models: list[dict[str, Any]] = next(
        (i["result"]["models"] for i in images if i["result"].get("models")), []
    )
    newest = predecessors[0] if predecessors else None
    if newest is not None:
        series = str(newest.SeriesInstanceUID)
        number = int(newest.get("InstanceNumber") or 0) + 1
    else:
        series, number = new_uid(uid_root), 1
    try:
        return screening_sr(
            images=evidence[0],
            findings_by_eye=findings,
            models=models,
            device={
                **device,
                "uid": device_uid(newest) or device_observer_uid(uid_root, device),
                "version": __version__,
            },
            series_instance_uid=series,
            sop_instance_uid=new_uid(uid_root),
            uid_root=uid_root,
            outcome=outcome_code if outcome_code in OUTCOMES else None,
            verified_by=person_name(signer_name),
            verified_at=moment or datetime.now(UTC),
            decision=decision,
            comment=reason,
            predecessor=list(predecessors) or None,
            verifying_organization=organization,
            instance_number=number,
            oct=evidence[1],
        )
    except ValueError as exc:  # a visit with nothing the SR can carry
        raise RejectedInput(
            f"The verified report cannot be built for this visit ({exc}). Nothing was signed.",
            reason="sr_not_buildable",
        ) from None


def device_uid(sr: Dataset | None) -> str | None:
    """The Device Observer UID of an earlier SR, so the sign-off names the same device."""
    if sr is None:
        return None
    for item in sr.get("ContentSequence", []):
        concept = item.get("ConceptNameCodeSequence")
        if concept and concept[0].CodeValue == DEVICE_OBSERVER_UID and item.get("UID"):
            return str(item.UID)
    return None
