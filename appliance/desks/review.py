"""The review desk: what a clinician sees of a visit, and the sign-off (accept or override).

Reading: the visits (newest visit outcome per ``visit_key``, refer first, with the last review),
one visit's photographs per eye with the model's findings, and the pictures themselves as the
core produces them (the camera field as JPEG, the heatmap PNG the worker saved — both the same
square crop, so the heatmap lies exactly over the photograph).

Signing: a ``reviews`` row, a NEW Comprehensive 3D SR (VERIFIED, the clinician as Verifying
Observer) for the same study with the clinician's values where overridden, saved as a derived
object (kind ``sr``) and queued to every destination, and the audit event (who, decision,
reason) — all in one transaction. The SR's Predecessor Documents Sequence names the visit's
preliminary (UNVERIFIED) SR, and the previous VERIFIED SR when a sign-off is amended.

A visit with no preliminary SR yet (its protocol is incomplete) can still be signed, but only
by overriding (there is no complete automated outcome to accept): the VERIFIED SR then has no
predecessor, and the page says so. A visit with no DICOM image at all (nothing to reference)
cannot be signed.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import cv2
import pydicom
from pydicom.dataset import Dataset

from appliance.audit import Action, AuditEvent, AuditTrail, EventID
from appliance.capture import Limits, decode_rgb
from appliance.config import Settings
from appliance.desks.signoff import (
    ACCEPTABLE,
    EYE_WORDS,
    Decision,
    Signed,
    check,
    signed_findings,
    verified_sr,
)
from appliance.dicom.op import to_bytes
from appliance.errors import ApplianceError, RejectedInput
from appliance.inference.preprocess import field_crop, find_field
from appliance.outbox import queue
from appliance.pipeline.documents import eye_findings, visit_images
from appliance.pipeline.headers import read_header
from appliance.store import BlobStore, Store

EYES = ("R", "L")
# The review desk's queue: referrals, then photographs only a person can grade, then the rest.
ORDER = {
    "refer": 0,
    "glaucoma_refer": 1,
    "human_grading": 2,
    "retake": 3,
    "incomplete": 4,
    "rescreen": 5,
}
URGENCY = {"urgent": 0, "soon": 1, "routine": 2}
MAX_LISTED = 500
PHOTO_MAX = 1024  # longest side of the field crop served to the page, in pixels


class Wakeable(Protocol):
    """The outbox forwarder: told when new jobs are queued."""

    def notify(self) -> None: ...


class VisitNotFound(ApplianceError):
    http_status = 404
    reason = "visit_not_found"


class VisitChanged(ApplianceError):
    """New photographs changed the visit after the page was opened."""

    http_status = 409
    reason = "visit_changed"


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

    @property
    def name(self) -> str:
        return EYE_WORDS[self.eye]

    @property
    def has_dicom(self) -> bool:
        return any(image.sop_instance_uid for image in self.images)


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


def visit_scope(visit_key: str) -> tuple[str, tuple[Any, ...]]:
    """The captures of a visit (the worker's grouping: study, else patient and day, else one)."""
    kind, _, rest = visit_key.partition(":")
    try:
        if kind == "study":
            return "c.study_pk = ?", (int(rest),)
        if kind == "patient":
            patient, _, day = rest.partition(":")
            if len(day) == 10:
                return (
                    "c.study_pk IS NULL AND c.patient_pk = ? AND substr(c.received_at, 1, 10) = ?",
                    (int(patient), day),
                )
        if kind == "capture":
            return "c.id = ?", (int(rest),)
    except ValueError:
        pass
    raise VisitNotFound("There is no such visit.")


class ReviewDesk:
    def __init__(
        self,
        store: Store,
        blobs: BlobStore,
        audit: AuditTrail,
        settings: Settings,
        forwarder: Wakeable | None = None,
    ) -> None:
        self.store = store
        self.blobs = blobs
        self.audit = audit
        self.destinations = tuple(d.name for d in settings.destinations)
        self.uid_root = settings.uid_root
        self.organization = f"Retinal screening, station {settings.station_name}"[:64]
        self.limits = Limits(
            max_image_pixels=settings.max_image_pixels,
            max_inflated_bytes=settings.max_inflated_bytes,
        )
        self.forwarder = forwarder

    # -- reading --------------------------------------------------------------------------
    def visits(self) -> list[VisitSummary]:
        """Every visit, waiting ones first (refer first, then by urgency), newest first."""
        rows = self.store.query(
            "SELECT vo.*, p.patient_id AS patient_identifier, p.patient_name, p.birth_date "
            "FROM visit_outcomes vo "
            "JOIN (SELECT max(id) AS id FROM visit_outcomes GROUP BY visit_key) newest "
            "ON newest.id = vo.id LEFT JOIN patients p ON p.id = vo.patient_pk "
            "ORDER BY vo.id DESC LIMIT ?",
            (MAX_LISTED,),
        )
        reviews = self._last_reviews()
        visits = [_summary(row, reviews.get(row["visit_key"])) for row in rows]
        visits.sort(
            key=lambda v: (
                not v.needs_review,
                ORDER.get(v.code, 9),
                URGENCY.get(v.urgency, 9),
            )
        )  # stable: newest first within each band
        return visits

    def visit(self, visit_key: str) -> VisitDetail:
        where, params = visit_scope(visit_key)
        row = self.store.one(
            "SELECT vo.*, p.patient_id AS patient_identifier, p.patient_name, p.birth_date "
            "FROM visit_outcomes vo LEFT JOIN patients p ON p.id = vo.patient_pk "
            "WHERE vo.visit_key = ? ORDER BY vo.id DESC LIMIT 1",
            (visit_key,),
        )
        if row is None:
            raise VisitNotFound("There is no such visit.")
        reviews = self._reviews(visit_key)
        summary = _summary(row, reviews[0] if reviews else None)
        payload = json.loads(row["payload"])
        images = self._images(visit_key, where, params)
        eyes = []
        for eye in payload.get("eyes", []):
            mine = tuple(i for i in images if i.eye == eye["eye"])
            eyes.append(
                EyeView(
                    eye=eye["eye"],
                    status=eye["status"],
                    dr_grade=eye["dr_grade"],
                    referable=eye["referable"],
                    dme=eye["dme"],
                    cdr=eye["cdr"],
                    glaucoma_suspect=eye["glaucoma_suspect"],
                    images=tuple(sorted(mine, key=lambda i: not i.result.get("gradable"))),
                )
            )
        shown = {e.eye for e in eyes}
        models: list[dict[str, Any]] = next(
            (i.result["models"] for i in images if i.result.get("models")), []
        )
        return VisitDetail(
            summary=summary,
            study_instance_uid=self._study_uid(visit_key, where, params),
            rule_set=str(row["rule_set"]),
            prompts=tuple(payload.get("prompts", [])),
            eyes=tuple(sorted(eyes, key=lambda e: EYES.index(e.eye) if e.eye in EYES else 9)),
            other_images=tuple(i for i in images if i.eye not in shown),
            models=tuple(
                {k: m.get(k) for k in ("name", "version", "task", "variant", "provider")}
                for m in models
            ),
            preliminary_sr=self._preliminary(visit_key),
            reviews=tuple(reviews),
        )

    def photo_jpeg(self, visit_key: str, capture_id: int) -> bytes:
        """A photograph as JPEG: the camera field (square crop, as the models saw it, so the
        heatmap lies over it) when it has a heatmap, else the whole picture."""
        row = self._capture(visit_key, capture_id)
        rgb = decode_rgb(self.blobs.read(row["file_path"]), self.limits)
        if json.loads(row["payload"] or "{}").get("heatmap"):
            found = find_field(rgb)
            size = int(min(PHOTO_MAX, max(256, round(2 * found.radius))))
            rgb = field_crop(rgb, size, found)
        elif max(rgb.shape[:2]) > PHOTO_MAX:
            scale = PHOTO_MAX / max(rgb.shape[:2])
            width, height = round(rgb.shape[1] * scale), round(rgb.shape[0] * scale)
            rgb = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
        ok, jpeg = cv2.imencode(
            ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90]
        )
        if not ok:
            raise ApplianceError("The photograph could not be prepared for display.")
        return bytes(jpeg.tobytes())

    def image_owner(self, visit_key: str, capture_id: int) -> dict[str, str]:
        """Whose photograph a capture of this visit is (patient, study, the DICOM image that
        stands for it), for the audit event of whoever is shown it or its heatmap."""
        where, params = visit_scope(visit_key)
        row = self.store.one(
            "SELECT c.media_type, c.sop_instance_uid, p.patient_id, s.study_instance_uid, "
            "(SELECT d.sop_instance_uid FROM derived_objects d WHERE d.capture_pk = c.id "
            " AND d.kind = 'op' ORDER BY d.id DESC LIMIT 1) AS op_uid "
            "FROM captures c LEFT JOIN patients p ON p.id = c.patient_pk "
            f"LEFT JOIN studies s ON s.id = c.study_pk WHERE c.id = ? AND {where}",
            (capture_id, *params),
        )
        if row is None:
            raise VisitNotFound("There is no such photograph in this visit.")
        dicom = row["media_type"] == "application/dicom"
        return {
            "patient_id": row["patient_id"] or "",
            # an upload with no study of its own: the study the visit was given when wrapped
            "study_instance_uid": row["study_instance_uid"]
            or self._study_uid(visit_key, where, params),
            "sop_instance_uid": (row["sop_instance_uid"] if dicom else row["op_uid"]) or "",
        }

    def heatmap_png(self, visit_key: str, capture_id: int) -> bytes:
        """The DR model's heatmap blended over the same field crop (saved by the worker)."""
        row = self._capture(visit_key, capture_id)
        path = json.loads(row["payload"] or "{}").get("heatmap")
        if not path:
            raise VisitNotFound("This photograph has no heatmap.")
        return self.blobs.read(path)

    # -- signing --------------------------------------------------------------------------
    def sign(
        self, visit_key: str, choice: Decision, *, user_pk: int, username: str, address: str = ""
    ) -> Signed:
        """Accept or override the visit's result: review row + VERIFIED SR + outbox + audit."""
        detail = self.visit(visit_key)
        summary = detail.summary
        if choice.outcome_id is not None and choice.outcome_id != summary.outcome_id:
            raise VisitChanged(
                "New photographs changed this visit after you opened it. "
                "Look at the visit again, then sign."
            )
        outcome_code, grades, reason = check(choice, detail)
        where, params = visit_scope(visit_key)
        images = visit_images(self.store, visit_key, where, params)
        if not images:
            raise RejectedInput(
                "This visit has no DICOM image for the signed report to reference, "
                "so it cannot be signed.",
                reason="nothing_to_sign",
            )
        datasets: list[Dataset] = [read_header(self.blobs.resolve(i["dicom_path"])) for i in images]
        predecessors = self._predecessors(visit_key)
        eyes = json.loads(self._outcome_payload(summary.outcome_id))["eyes"]
        moment = datetime.now(UTC)
        sr = verified_sr(
            images=images,
            datasets=datasets,
            findings=signed_findings(eyes_findings=eye_findings(eyes), grades=grades),
            predecessors=predecessors,
            username=username,
            organization=self.organization,
            decision=choice.decision,
            outcome_code=outcome_code,
            reason=reason,
            uid_root=self.uid_root,
            moment=moment,
        )
        sr_uid, series = str(sr.SOPInstanceUID), str(sr.SeriesInstanceUID)
        path = self.blobs.put(to_bytes(sr), "application/dicom")
        study = str(sr.StudyInstanceUID)
        references = sorted(i["uid"] for i in images)
        previous = tuple(str(p.SOPInstanceUID) for p in predecessors)
        now = moment.isoformat(timespec="microseconds")
        with self.store.write() as tx:
            newest_outcome = tx.one(
                "SELECT max(id) AS id FROM visit_outcomes WHERE visit_key = ?", (visit_key,)
            )
            if newest_outcome is None or newest_outcome["id"] != summary.outcome_id:
                raise VisitChanged(
                    "New photographs arrived while signing. Look at the visit again, then sign."
                )
            review_id = tx.insert(
                "reviews",
                {
                    "visit_key": visit_key,
                    "user_pk": user_pk,
                    "decision": choice.decision,
                    "outcome_code": outcome_code,
                    "reason": reason,
                    "payload": json.dumps(
                        {
                            "outcome_id": summary.outcome_id,
                            "model_outcome": summary.code,
                            "grades": grades,
                            "predecessors": list(previous),
                        }
                    ),
                    "sr_sop_instance_uid": sr_uid,
                    "created_at": now,
                },
            )
            tx.insert(
                "derived_objects",
                {
                    "capture_pk": None,
                    "visit_key": visit_key,
                    "kind": "sr",
                    "sop_class_uid": str(sr.SOPClassUID),
                    "sop_instance_uid": sr_uid,
                    "series_instance_uid": series,
                    "study_instance_uid": study,
                    "file_path": path,
                    "references_json": json.dumps(references),
                    "created_at": now,
                },
            )
            queued = sum(
                queue.enqueue(
                    tx,
                    kind="sr",
                    destination=name,
                    sop_instance_uid=sr_uid,
                    file_path=path,
                    study=study,
                )
                for name in self.destinations
            )
            self.audit.record(
                tx,
                AuditEvent(
                    event_id=EventID.INSTANCES_ACCESSED,
                    action=Action.CREATE,
                    user_id=username,
                    source_address=address,
                    patient_id=summary.patient_id,
                    study_instance_uid=study,
                    sop_instance_uids=(sr_uid, *previous),
                    detail={
                        "stage": "review",
                        "visit": visit_key,
                        "decision": choice.decision,
                        "reason": reason,
                        "model_outcome": summary.code,
                        "outcome": outcome_code,
                        "grades": grades,
                        "verified_sr": sr_uid,
                        "predecessors": list(previous),
                        "queued": queued,
                    },
                ),
            )
            if queued and self.forwarder is not None:
                tx.after_commit(self.forwarder.notify)
        return Signed(review_id, sr_uid, previous, outcome_code, queued)

    # -- queries --------------------------------------------------------------------------
    def _last_reviews(self) -> dict[str, ReviewRecord]:
        rows = self.store.query(
            "SELECT r.*, u.username FROM reviews r JOIN users u ON u.id = r.user_pk "
            "WHERE r.id IN (SELECT max(id) FROM reviews GROUP BY visit_key)"
        )
        return {row["visit_key"]: _review(row) for row in rows}

    def _reviews(self, visit_key: str) -> list[ReviewRecord]:
        rows = self.store.query(
            "SELECT r.*, u.username FROM reviews r JOIN users u ON u.id = r.user_pk "
            "WHERE r.visit_key = ? ORDER BY r.id DESC",
            (visit_key,),
        )
        return [_review(row) for row in rows]

    def _images(self, visit_key: str, where: str, params: tuple[Any, ...]) -> list[ImageView]:
        rows = self.store.query(
            "SELECT c.id, c.received_at, c.media_type, c.sop_instance_uid, r.payload, "
            "d.sop_instance_uid AS op_uid FROM captures c "
            "JOIN results r ON r.capture_pk = c.id AND r.kind = 'screening' "
            "LEFT JOIN derived_objects d ON d.capture_pk = c.id AND d.kind = 'op' "
            f"WHERE {where} ORDER BY c.id",
            params,
        )
        out = []
        for row in rows:
            result = json.loads(row["payload"])
            dicom = row["media_type"] == "application/dicom"
            out.append(
                ImageView(
                    capture_id=int(row["id"]),
                    eye=result.get("laterality"),
                    field=result.get("field"),
                    received_at=row["received_at"],
                    sop_instance_uid=row["sop_instance_uid"] if dicom else row["op_uid"],
                    has_heatmap=bool(result.get("heatmap")),
                    result=result,
                )
            )
        return out

    def _capture(self, visit_key: str, capture_id: int) -> dict[str, Any]:
        where, params = visit_scope(visit_key)
        row = self.store.one(
            "SELECT c.id, c.file_path, r.payload FROM captures c "
            "LEFT JOIN results r ON r.capture_pk = c.id AND r.kind = 'screening' "
            f"WHERE c.id = ? AND {where}",
            (capture_id, *params),
        )
        if row is None:
            raise VisitNotFound("There is no such photograph in this visit.")
        return row

    def _study_uid(self, visit_key: str, where: str, params: tuple[Any, ...]) -> str:
        row = self.store.one(
            "SELECT s.study_instance_uid FROM captures c JOIN studies s ON s.id = c.study_pk "
            f"WHERE {where} LIMIT 1",
            params,
        ) or self.store.one(
            "SELECT study_instance_uid FROM visit_studies WHERE visit_key = ?", (visit_key,)
        )
        return str(row["study_instance_uid"]) if row else ""

    def _outcome_payload(self, outcome_id: int) -> str:
        return str(
            self.store.scalar("SELECT payload FROM visit_outcomes WHERE id = ?", (outcome_id,))
        )

    def _srs(self, visit_key: str) -> list[dict[str, Any]]:
        """The visit's SRs, newest first, each marked verified (a sign-off made it) or not."""
        return self.store.query(
            "SELECT d.*, EXISTS (SELECT 1 FROM reviews r "
            "WHERE r.sr_sop_instance_uid = d.sop_instance_uid) AS verified "
            "FROM derived_objects d WHERE d.visit_key = ? AND d.kind = 'sr' ORDER BY d.id DESC",
            (visit_key,),
        )

    def _preliminary(self, visit_key: str) -> str | None:
        row = next((r for r in self._srs(visit_key) if not r["verified"]), None)
        return str(row["sop_instance_uid"]) if row else None

    def _predecessors(self, visit_key: str) -> list[Dataset]:
        """Newest preliminary SR, and the newest VERIFIED one if it came after it (amendment)."""
        srs = self._srs(visit_key)
        chosen = []
        preliminary = next((r for r in srs if not r["verified"]), None)
        signed = next((r for r in srs if r["verified"]), None)
        if signed is not None and (preliminary is None or signed["id"] > preliminary["id"]):
            chosen.append(signed)
        if preliminary is not None:
            chosen.append(preliminary)
        return [pydicom.dcmread(io.BytesIO(self.blobs.read(r["file_path"]))) for r in chosen]


def _summary(row: dict[str, Any], review: ReviewRecord | None) -> VisitSummary:
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


def _review(row: dict[str, Any]) -> ReviewRecord:
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
    )
