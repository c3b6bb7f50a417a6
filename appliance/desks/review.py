"""The review desk: what a clinician sees of a visit, and the sign-off (accept or override).

Reading: the visits (newest visit outcome per ``visit_key``, refer first, with the last review),
one visit's photographs per eye with the model's findings, and the pictures themselves as the
core produces them (the camera field as JPEG, the heatmap PNG the worker saved — both the same
square crop, so the heatmap lies exactly over the photograph).

Signing is an electronic signature (desks/signers.py): the clinician's full name and
credentials must be set and their password re-entered (``Accounts.confirm_signature``: a wrong
one is refused, audited and counted toward the lockout). It issues a ``reviews`` row, a NEW
Comprehensive 3D SR (VERIFIED, the clinician as Verifying Observer) for the same study with the
clinician's values where overridden, and a signed PDF report (the clinician's decision as the
outcome, the signer block, VERIFIED) — both saved as derived objects (kinds ``sr``, ``pdf``),
queued to every destination, with the audit event (who, meaning, decision, reason) — all in
one transaction. Each names what it replaces in its Predecessor Documents Sequence: the visit's
preliminary SR / PDF, and the previous signed one when a sign-off is amended
(desks/report_versions.py). Every version stays listed on the visit.

A visit with no preliminary SR yet (its protocol is incomplete) can still be signed, but only
by overriding (there is no complete automated outcome to accept): the VERIFIED SR then has no
predecessor, and the page says so. A visit with no DICOM image at all (nothing to reference)
cannot be signed.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Protocol

import cv2
from pydicom.dataset import Dataset

from appliance.audit import AuditTrail, events
from appliance.capture import Limits, decode_rgb
from appliance.config import Settings
from appliance.desks import report_versions
from appliance.desks.accounts import Accounts
from appliance.desks.review_views import (
    EYES,
    EyeView,
    ImageView,
    ReviewRecord,
    VisitDetail,
    VisitSummary,
    review_from_row,
    summary_from_row,
)
from appliance.desks.signers import meaning
from appliance.desks.signoff import (
    Decision,
    Signature,
    Signed,
    check,
    check_oct_dme,
    signed_findings,
    verified_sr,
    with_oct_dme,
)
from appliance.desks.station_view import Report, report
from appliance.dicom.op import to_bytes
from appliance.dicom.report_pdf import Clinic
from appliance.errors import ApplianceError, RejectedInput
from appliance.inference.preprocess import field_crop, find_field
from appliance.outbox import queue
from appliance.pipeline import eyes, oct_documents
from appliance.pipeline.documents import VisitSources, eye_findings, report_document
from appliance.pipeline.documents import visit_sources as read_sources
from appliance.pipeline.record import insert_derived
from appliance.store import BlobStore, Store
from appliance.visits import DerivedObject, ImageRecord, VisitNotFound, scope

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


class VisitChanged(ApplianceError):
    """New photographs changed the visit after the page was opened."""

    http_status = 409
    reason = "visit_changed"


class ReviewDesk:
    def __init__(
        self,
        store: Store,
        blobs: BlobStore,
        audit: AuditTrail,
        settings: Settings,
        forwarder: Wakeable | None = None,
        *,
        accounts: Accounts,
    ) -> None:
        self.store = store
        self.blobs = blobs
        self.audit = audit
        self.accounts = accounts
        self.destinations = tuple(d.name for d in settings.destinations)
        self.uid_root = settings.uid_root
        self.device = oct_documents.appliance_device(settings)  # as the pipeline names it
        self.clinic = Clinic(settings.clinic_name, settings.clinic_address)
        self.organization = (
            settings.clinic_name.strip() or f"Retinal screening, station {settings.station_name}"
        )[:64]
        self.limits = Limits(max_image_pixels=settings.max_image_pixels,
                             max_inflated_bytes=settings.max_inflated_bytes)  # fmt: skip
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
        reviews = self._last_reviews()  # sorted below: stable, newest first within each band
        visits = [summary_from_row(row, reviews.get(row["visit_key"])) for row in rows]
        visits.sort(key=lambda v: (not v.needs_review, ORDER.get(v.code, 9),
                                   URGENCY.get(v.urgency, 9)))  # fmt: skip
        return visits

    def visit(self, visit_key: str) -> VisitDetail:
        found = scope(visit_key)
        where, params = found.where, found.params
        row = self.store.one(
            "SELECT vo.*, p.patient_id AS patient_identifier, p.patient_name, p.birth_date "
            "FROM visit_outcomes vo LEFT JOIN patients p ON p.id = vo.patient_pk "
            "WHERE vo.visit_key = ? ORDER BY vo.id DESC LIMIT 1",
            (visit_key,),
        )
        if row is None:
            raise VisitNotFound("There is no such visit.")
        reviews = self._reviews(visit_key)
        summary = summary_from_row(row, reviews[0] if reviews else None)
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
                    oct_status=eye.get("oct_status"),
                    oct_dme=eye.get("oct_dme"),
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
            preliminary_sr=report_versions.preliminary(self.store, visit_key),
            reviews=tuple(reviews),
            versions=tuple(report_versions.versions(self.store, visit_key)),
        )

    def document(self, visit_key: str, document_id: int) -> Report:
        """One version of the visit's PDF report (any other visit's: not found)."""
        return report(self.store, self.blobs, document_id, visit_keys=(visit_key,))

    def photo_jpeg(self, visit_key: str, capture_id: int) -> bytes:
        """A photograph as JPEG: the camera field (square crop, as the models saw it, so the
        heatmap lies over it) when it has a heatmap, else the whole picture."""
        row = self._capture(visit_key, capture_id)
        rgb = decode_rgb(self.blobs.read(row["file_path"]), self.limits)
        if ImageRecord.parse(row["payload"]).heatmap:
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
        found = scope(visit_key)
        where, params = found.where, found.params
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
        path = ImageRecord.parse(row["payload"]).heatmap
        if not path:
            raise VisitNotFound("This photograph has no heatmap.")
        return self.blobs.read(path)

    # -- signing --------------------------------------------------------------------------
    def sign(
        self,
        visit_key: str,
        choice: Decision,
        *,
        user_pk: int,
        username: str,
        address: str = "",
        password: str = "",
    ) -> Signed:
        """Accept or override the visit's result, signed with the password re-entered:
        review row + VERIFIED SR + signed PDF + outbox + audit."""
        detail = self.visit(visit_key)
        summary = detail.summary
        if choice.outcome_id is not None and choice.outcome_id != summary.outcome_id:
            raise VisitChanged(
                "New photographs changed this visit after you opened it. "
                "Look at the visit again, then sign."
            )
        outcome_code, grades, reason = check(choice, detail)
        oct_dme = check_oct_dme(choice, detail, outcome_code)
        found = scope(visit_key)
        sources = read_sources(self.store, self.blobs, visit_key, found.where, found.params)
        if sources is None:
            raise RejectedInput(
                "This visit has no DICOM image for the signed report to reference, "
                "so it cannot be signed.",
                reason="nothing_to_sign",
            )
        signer = self.accounts.get(user_pk)
        if signer is None or not signer.can_sign:
            raise RejectedInput(
                "Your account has no full name or credentials to print with your signature. "
                "Ask an admin to set them (Users page), then sign.",
                reason="no_signer_profile",
            )
        self.accounts.confirm_signature(user_pk, password, address=address, about=visit_key)
        signature = Signature(
            visit_key, summary, choice.decision, outcome_code, grades, reason,
            user_pk, username, address, signer_name=signer.full_name,
            credentials=signer.credentials,
            meaning=meaning(choice.decision, amendment=bool(detail.reviews)), oct_dme=oct_dme,
        )  # fmt: skip
        moment = datetime.now(UTC)
        srs = report_versions.predecessors(self.store, self.blobs, visit_key, "sr")
        pdfs = report_versions.predecessors(self.store, self.blobs, visit_key, "pdf")
        sr = self._verified_sr(signature, sources, srs, moment)
        pdf = self._signed_pdf(signature, sources, pdfs, moment)
        previous = tuple(str(p.SOPInstanceUID) for p in srs)
        review_id, queued = self._store_signature(
            signature,
            (sr, pdf),
            references=sources.uids,
            previous=(previous, tuple(str(p.SOPInstanceUID) for p in pdfs)),
            now=moment.isoformat(timespec="microseconds"),
        )
        return Signed(
            review_id, str(sr.SOPInstanceUID), previous, outcome_code, queued,
            pdf_sop_instance_uid=str(pdf.SOPInstanceUID),
            pdf_predecessors=tuple(str(p.SOPInstanceUID) for p in pdfs),
            meaning=signature.meaning,
        )  # fmt: skip

    def _verified_sr(
        self,
        signature: Signature,
        sources: VisitSources,
        predecessors: list[Dataset],
        moment: datetime,
    ) -> Dataset:
        eyes = with_oct_dme(self._outcome_payload(signature.summary.outcome_id), signature.oct_dme)
        return verified_sr(
            images=sources.images,
            evidence=sources.sr_images(eyes),
            findings=signed_findings(
                eyes_findings=eye_findings(eyes, sources.images), grades=signature.grades
            ),
            predecessors=predecessors,
            signer_name=signature.signer_name,
            organization=self.organization,
            decision=signature.decision,
            outcome_code=signature.outcome_code,
            reason=signature.reason,
            uid_root=self.uid_root,
            moment=moment,
            device=self.device,
        )

    def _signed_pdf(
        self,
        signature: Signature,
        sources: VisitSources,
        predecessors: list[Dataset],
        moment: datetime,
    ) -> Dataset:
        payload = self._outcome_payload(signature.summary.outcome_id)
        outcome, added = report_versions.report_outcome(payload, signature)
        return report_document(
            self.blobs,
            sources,
            outcome_json=outcome,
            uid_root=self.uid_root,
            clinic=self.clinic,
            signature=report_versions.report_signature(signature, moment),
            replaces=predecessors,
            added_findings=added,
        )

    def _store_signature(
        self,
        signature: Signature,
        documents: tuple[Dataset, Dataset],
        *,
        references: list[str],
        previous: tuple[tuple[str, ...], tuple[str, ...]],
        now: str,
    ) -> tuple[int, int]:
        """One transaction: review row, the SR and PDF as derived objects, their jobs, the
        audit event. Returns the review's id and how many jobs were queued."""
        key, summary = signature.visit_key, signature.summary
        sr, pdf = documents
        sr_uid, study = str(sr.SOPInstanceUID), str(sr.StudyInstanceUID)
        paths = [self.blobs.put(to_bytes(ds), "application/dicom") for ds in documents]
        with self.store.write() as tx:
            newest_outcome = tx.one(
                "SELECT max(id) AS id FROM visit_outcomes WHERE visit_key = ?", (key,)
            )
            if newest_outcome is None or newest_outcome["id"] != summary.outcome_id:
                raise VisitChanged(
                    "New photographs arrived while signing. Look at the visit again, then sign."
                )
            row = signature.review_row(sr_uid, previous[0], now)
            row["pdf_sop_instance_uid"] = str(pdf.SOPInstanceUID)
            review_id = tx.insert("reviews", row)
            queued = 0
            for kind, ds, path in zip(("sr", "pdf"), documents, paths, strict=True):
                uid = str(ds.SOPInstanceUID)
                insert_derived(
                    tx,
                    DerivedObject(
                        kind=kind,
                        capture_pk=None,
                        sop_class_uid=str(ds.SOPClassUID),
                        sop_instance_uid=uid,
                        series_instance_uid=str(ds.SeriesInstanceUID),
                        study_instance_uid=study,
                        file_path=path,
                        created_at=now,
                        references_json=json.dumps(references),
                    ),
                    key,
                )
                queued += sum(
                    queue.enqueue(
                        tx,
                        kind=kind,
                        destination=name,
                        sop_instance_uid=uid,
                        file_path=path,
                        study=study,
                    )  # fmt: skip
                    for name in self.destinations
                )
            detail = signature.audit_detail(sr_uid, previous[0], queued)
            detail.update(signed_pdf=str(pdf.SOPInstanceUID), pdf_predecessors=list(previous[1]))
            every = (sr_uid, str(pdf.SOPInstanceUID), *previous[0], *previous[1])
            self.audit.record(
                tx,
                events.review_signed(
                    events.Who(signature.username, signature.address),
                    events.About(summary.patient_id, study, every),
                    detail,
                ),
            )
            if queued and self.forwarder is not None:
                tx.after_commit(self.forwarder.notify)
        return review_id, queued

    # -- queries --------------------------------------------------------------------------
    def _last_reviews(self) -> dict[str, ReviewRecord]:
        rows = self.store.query(
            "SELECT r.*, u.username FROM reviews r JOIN users u ON u.id = r.user_pk "
            "WHERE r.id IN (SELECT max(id) FROM reviews GROUP BY visit_key)"
        )
        return {row["visit_key"]: review_from_row(row) for row in rows}

    def _reviews(self, visit_key: str) -> list[ReviewRecord]:
        rows = self.store.query(
            "SELECT r.*, u.username FROM reviews r JOIN users u ON u.id = r.user_pk "
            "WHERE r.visit_key = ? ORDER BY r.id DESC",
            (visit_key,),
        )
        return [review_from_row(row) for row in rows]

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
        decided = eyes.in_force(self.store, where, params)  # filed under the decided eye
        for row in rows:
            record = ImageRecord.parse(row["payload"])
            dicom = row["media_type"] == "application/dicom"
            out.append(
                ImageView(
                    capture_id=int(row["id"]),
                    eye=eyes.counted_eye(record, decided.get(row["id"])),
                    decision=decided.get(row["id"]),
                    field=record.field,
                    received_at=row["received_at"],
                    sop_instance_uid=row["sop_instance_uid"] if dicom else row["op_uid"],
                    has_heatmap=bool(record.heatmap),
                    result=record.data,
                )
            )
        return out

    def _capture(self, visit_key: str, capture_id: int) -> dict[str, Any]:
        found = scope(visit_key)
        where, params = found.where, found.params
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
