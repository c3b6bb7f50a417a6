"""The one way an image enters the appliance, whichever path it came by.

check → store the file atomically → in ONE transaction: patient, study, capture row and its
audit event → tell the pipeline. Refusals raise an :class:`ApplianceError` after writing an
audit event that names the reason; nothing is stored for a refused input. Content already held
(capture/duplicates.py): an identical resend for the same patient is "already received"; the
same bytes for another patient, or other content under a held UID, are refused.

Identity: a DICOM header is the authority on its own patient and study. Other files take it
from their sidecar or upload form (patient fields, and the worklist step's Accession Number and
Study Instance UID, which create the study row so the visit is keyed by that study). A hot-folder
file with no identity at all takes the station's current patient selection, through the
``fallback_identity`` callable the process wiring gives the ingestor.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from appliance.audit import AuditEvent, AuditTrail, EventID, Outcome, events
from appliance.audit.events import CAPTURE_ID
from appliance.capture import duplicates
from appliance.capture.decode import Inspection, Limits, examine
from appliance.capture.duplicates import UIDConflict
from appliance.domain import Capture, PatientInfo, Source
from appliance.errors import ApplianceError, OtherPatientsPhotograph, RejectedInput, TooLarge
from appliance.metrics import Metrics
from appliance.store import BlobStore, Store, Tx, utcnow
from appliance.visits import visit_key

LOGGER = logging.getLogger(__name__)
_DATE = re.compile(r"\d{8}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
PATIENT_FIELDS = ("patient_id", "patient_name", "birth_date", "sex", "issuer")
STUDY_FIELDS = ("accession_number", "study_instance_uid")
IDENTITY_FIELDS = frozenset((*PATIENT_FIELDS, *STUDY_FIELDS, "laterality"))
_LIMITS = {"patient_name": 320, "accession_number": 16, "study_instance_uid": 64}
# Images checked (parsed, inflated, decoded) at the same time, whatever path they came by: the
# memory a check takes is bounded by the limits, this bounds how many run together.
CHECK_SLOTS = 2
IDENTITY_CHECKED = ("patient_name", "birth_date", "sex")


@dataclass(frozen=True)
class Incoming:
    data: bytes
    source: Source
    user_id: str  # "ae:<calling AE>", "hotfolder", or the API credential's name
    calling_ae: str | None = None
    source_address: str = ""
    fields: dict[str, Any] | None = None  # identity from a sidecar or the upload form
    detail: dict[str, Any] = field(default_factory=dict)  # extra audit context (no PHI)


@dataclass(frozen=True)
class Identity:
    """Who and which study a file belongs to, as a sidecar, form or station selection says."""

    patient: PatientInfo | None = None
    laterality: str | None = None
    accession_number: str = ""
    study_instance_uid: str = ""

    @property
    def empty(self) -> bool:
        return self.patient is None and not self.study_instance_uid


def identity_from_fields(fields: dict[str, Any]) -> Identity:
    """Validate sidecar / form identity fields; raises RejectedInput naming the bad field."""
    unknown = sorted(set(fields) - IDENTITY_FIELDS)
    if unknown:
        raise RejectedInput(
            f"unknown identity field(s): {', '.join(unknown)}", reason="bad_sidecar"
        )
    values: dict[str, str] = {}
    for key in sorted(IDENTITY_FIELDS):
        value = fields.get(key, "")
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise RejectedInput(f"{key} must be text", reason="bad_sidecar")
        value = value.strip()
        if len(value) > _LIMITS.get(key, 64) or _CONTROL.search(value):
            raise RejectedInput(
                f"{key} is too long or holds control characters", reason="bad_sidecar"
            )
        values[key] = value
    if values["birth_date"] and not _DATE.fullmatch(values["birth_date"]):
        raise RejectedInput("birth_date must be YYYYMMDD", reason="bad_sidecar")
    if values["sex"] not in ("", "M", "F", "O"):
        raise RejectedInput("sex must be M, F or O", reason="bad_sidecar")
    if values["laterality"] not in ("", "L", "R"):
        raise RejectedInput("laterality must be L or R", reason="bad_sidecar")
    if "\\" in values["accession_number"]:
        raise RejectedInput("accession_number must not contain a backslash", reason="bad_sidecar")
    study_uid = values["study_instance_uid"]
    if study_uid and not _UID.fullmatch(study_uid):
        raise RejectedInput(
            "study_instance_uid must be a DICOM UID (digits and dots)", reason="bad_sidecar"
        )
    if values["accession_number"] and not study_uid:
        raise RejectedInput(
            "accession_number needs the study_instance_uid of the same worklist step",
            reason="bad_sidecar",
        )
    patient_values = {key: values[key] for key in PATIENT_FIELDS}
    patient = PatientInfo(**patient_values) if any(patient_values.values()) else None
    if (patient is not None or study_uid) and not values["patient_id"]:
        raise RejectedInput(
            "patient_id is required with other identity fields", reason="bad_sidecar"
        )
    return Identity(
        patient=patient,
        laterality=values["laterality"] or None,
        accession_number=values["accession_number"],
        study_instance_uid=study_uid,
    )


def patient_from_fields(fields: dict[str, Any]) -> tuple[PatientInfo | None, str | None]:
    """Validate sidecar / form identity fields; raises RejectedInput naming the bad field."""
    identity = identity_from_fields(fields)
    return identity.patient, identity.laterality


class Ingestor:
    def __init__(
        self,
        store: Store,
        blobs: BlobStore,
        audit: AuditTrail,
        limits: Limits,
        max_bytes: int,
        on_new: Callable[[int], None] = lambda capture_id: None,
        metrics: Metrics | None = None,
        fallback_identity: Callable[[], dict[str, Any] | None] = lambda: None,
    ) -> None:
        self.metrics = metrics
        self.fallback_identity = fallback_identity  # the station's current selection, as fields
        self.store = store
        self.blobs = blobs
        self.audit = audit
        self.limits = limits
        self.max_bytes = max_bytes
        self.on_new = on_new
        self._checks = threading.BoundedSemaphore(CHECK_SLOTS)

    def ingest(self, item: Incoming) -> Capture:
        try:
            capture = self._ingest(item)
        except ApplianceError as exc:
            self.refuse(item, exc)
            raise
        if not capture.duplicate:
            if self.metrics is not None:
                self.metrics.captures.labels(source=str(item.source)).inc()
            self.on_new(capture.id)
        return capture

    def _ingest(self, item: Incoming) -> Capture:
        if len(item.data) > self.max_bytes:
            raise TooLarge(
                f"the file is {len(item.data)} bytes, over the {self.max_bytes}-byte limit"
            )
        self.blobs.check_space(len(item.data))
        given = identity_from_fields(item.fields or {})
        with self._checks:
            found = examine(item.data, self.limits)
        detail = dict(item.detail)
        found, patient, laterality, lat_source = self._identify(item, found, given, detail)
        digest = hashlib.sha256(item.data).hexdigest()
        existing = duplicates.existing(self.store, found, digest)
        if existing is not None:
            return self._duplicate(item, found, existing, digest, patient)
        relative = self.blobs.put(item.data, found.media_type, digest)
        with self.store.write() as tx:
            patient_pk, conflict = _upsert_patient(tx, patient)
            study_pk = _upsert_study(tx, found, patient_pk)
            received_at = utcnow()
            row = {
                "source": str(item.source),
                "media_type": found.media_type,
                "content_sha256": digest,
                "file_path": relative,
                "size_bytes": len(item.data),
                "sop_class_uid": found.sop_class_uid,
                "sop_instance_uid": found.sop_instance_uid,
                "laterality": laterality,
                "laterality_source": lat_source,
                "patient_pk": patient_pk,
                "study_pk": study_pk,
                "calling_ae": item.calling_ae,
                "received_at": received_at,
                "identity_conflict": json.dumps(conflict, sort_keys=True) if conflict else None,
            }
            capture_id = tx.insert("captures", row)
            if conflict:
                detail["identity_conflict"] = sorted(conflict)
                self.audit.record(tx, _identity_alert(item, patient, capture_id, conflict))
            self.audit.record(
                tx,
                events.received(
                    _event_for(item.source),
                    _who(item),
                    events.About(
                        patient.patient_id if patient else "",
                        found.study_instance_uid or "",
                        [found.sop_instance_uid] if found.sop_instance_uid else [],
                    ),
                    capture_id=capture_id,
                    detail={
                        "source": str(item.source),
                        "media_type": found.media_type,
                        "sha256": digest,
                        "size_bytes": len(item.data),
                        **detail,
                    },
                ),
            )
        self._stored(capture_id, item, found.media_type, bool(conflict))
        return Capture(
            id=capture_id,
            source=item.source,
            media_type=found.media_type,
            content_sha256=digest,
            file_path=relative,
            size_bytes=len(item.data),
            received_at=received_at,
            laterality=laterality,
            laterality_source=lat_source,
            sop_class_uid=found.sop_class_uid,
            sop_instance_uid=found.sop_instance_uid,
            study_instance_uid=found.study_instance_uid,
            patient=patient or PatientInfo(),
            calling_ae=item.calling_ae,
        )

    def _identify(
        self, item: Incoming, found: Inspection, given: Identity, detail: dict[str, Any]
    ) -> tuple[Inspection, PatientInfo | None, str | None, str | None]:
        """Whose photograph and which eye: the DICOM header's own identity, else the sidecar's
        fields (a hot-folder file without any: the station's selection, noted in ``detail``).
        Returns the inspection (with the sidecar's study), patient, laterality and its source."""
        patient: PatientInfo | None
        laterality: str | None
        lat_source: str | None
        study_uid = found.study_instance_uid
        if found.patient is not None:  # a DICOM header is the authority on its own identity
            patient, laterality, lat_source = found.patient, found.laterality, "dicom"
        else:
            if item.source is Source.HOTFOLDER:
                given = self.or_selection(given, detail)
            patient, laterality, lat_source = given.patient, given.laterality, "sidecar"
            if given.study_instance_uid and not study_uid:
                study_uid = given.study_instance_uid
                found = replace(
                    found,
                    study_instance_uid=study_uid,
                    accession_number=given.accession_number,
                    study_date=found.study_date or utcnow()[:10].replace("-", ""),
                )
                self.check_study_owner(study_uid, patient)
        if laterality is None:
            lat_source = None
        return found, patient, laterality, lat_source

    def _stored(self, capture_id: int, item: Incoming, media_type: str, conflict: bool) -> None:
        LOGGER.info("capture %d stored from %s (%s)", capture_id, item.source, media_type)
        if conflict:
            LOGGER.warning("capture %d: the patient identity differs from the one held", capture_id)
            if self.metrics is not None:
                self.metrics.identity_conflicts.labels(source=str(item.source)).inc()

    def selection(self) -> Identity | None:
        """The station's current selection as an identity, or None (never fails an ingest)."""
        try:
            fields = self.fallback_identity()
        except Exception:
            LOGGER.exception("the station selection could not be read; the file has no identity")
            return None
        if not fields:
            return None
        try:
            identity = identity_from_fields(fields)
        except RejectedInput as exc:
            LOGGER.warning("the station selection is not a usable identity: %s", exc.message)
            return None
        return None if identity.empty else identity

    def or_selection(self, given: Identity, detail: dict[str, Any]) -> Identity:
        """A hot-folder file's identity: its sidecar's, else (none given) the station's
        selection, keeping the sidecar's eye; the choice is noted in ``detail``."""
        if not given.empty:
            return given
        selected = self.selection()
        if selected is None:
            return given
        detail["identity"] = "station_selection"
        return replace(selected, laterality=given.laterality)

    def check_study_owner(self, study_uid: str, patient: PatientInfo | None) -> None:
        """A given Study Instance UID must not already belong to another patient."""
        owner = self.store.one(
            "SELECT p.patient_id, p.issuer FROM studies s JOIN patients p ON p.id = s.patient_pk "
            "WHERE s.study_instance_uid = ?",
            (study_uid,),
        )
        if owner is None or patient is None:
            return
        if (owner["patient_id"], owner["issuer"]) != (patient.patient_id, patient.issuer):
            raise RejectedInput(
                "study_instance_uid already belongs to another patient; check the identity",
                reason="identity_conflict",
            )

    def _duplicate(
        self,
        item: Incoming,
        found: Inspection,
        row: dict[str, Any],
        digest: str,
        patient: PatientInfo | None,
    ) -> Capture:
        """Content or a SOP Instance UID we already hold (capture/duplicates.py): an identical
        resend for the same patient is a success, "already received"; else refused."""
        held = duplicates.check(self.store, self.blobs, item.data, found, row, digest, patient)
        self.audit.log(
            events.received(
                _event_for(item.source),
                _who(item),
                events.About(
                    held.patient_id if held else "",
                    found.study_instance_uid or "",
                    [found.sop_instance_uid or ""],
                ),
                capture_id=row["id"],
                detail={"duplicate": True, "note": "identical resend", "visit": visit_key(row)},
            )
        )
        return duplicates.again(row, found, held)

    def refuse(self, item: Incoming, exc: ApplianceError) -> None:
        """Audit a refused input (also for refusals decided before :meth:`ingest`)."""
        LOGGER.warning("refused input from %s: %s (%s)", item.source, exc.reason, exc.message)
        if self.metrics is not None:
            self.metrics.refused.labels(source=str(item.source), reason=exc.reason).inc()
        conflict = exc.detail if isinstance(exc, UIDConflict) else None
        try:
            if isinstance(exc, OtherPatientsPhotograph):
                self.audit.log(_other_patient(item, exc))
                return
            self.audit.log(
                events.refused(
                    # other content under a held UID is security-relevant: a spoofed or
                    # broken sender could otherwise replace what was analysed and forwarded
                    EventID.SECURITY_ALERT if conflict else _event_for(item.source),
                    _who(item),
                    events.About(
                        (conflict or {}).get("patient_id", ""),
                        (conflict or {}).get("study_instance_uid", ""),
                        [conflict["sop_instance_uid"]] if conflict else [],
                    ),
                    outcome=Outcome.SERIOUS_FAILURE if conflict else Outcome.MINOR_FAILURE,
                    detail={
                        "refused": exc.reason,
                        "message": exc.message,
                        "source": str(item.source),
                        "size_bytes": len(item.data),
                        **item.detail,
                        **(
                            {k: conflict[k] for k in ("capture_id", "held_sha256", "sha256")}
                            if conflict
                            else {}
                        ),
                    },
                )
            )
        except Exception:  # the refusal itself must still reach the sender
            LOGGER.exception("could not audit a refused input")


def _other_patient(item: Incoming, exc: OtherPatientsPhotograph) -> AuditEvent:
    return events.duplicate_for_other_patient(
        _who(item),
        events.About(exc.patient_id),
        {
            "refused": exc.reason,
            "message": exc.message,
            "source": str(item.source),
            "size_bytes": len(item.data),
            CAPTURE_ID: exc.capture_id,
            "held_patient_id": exc.held_patient_id,
            "patient_id": exc.patient_id,
            **item.detail,
        },
    )


def _event_for(source: Source) -> EventID:
    return EventID.INSTANCES_TRANSFERRED if source is Source.DICOM else EventID.IMPORT


def _identity_alert(
    item: Incoming, patient: PatientInfo | None, capture_id: int, conflict: dict[str, Any]
) -> AuditEvent:
    patient_id = patient.patient_id if patient else ""
    return events.identity_conflict(
        _who(item), patient_id, capture_id=capture_id, fields=sorted(conflict)
    )


def _who(item: Incoming) -> events.Who:
    return events.Who(item.user_id, item.source_address, item.calling_ae or "")


def _same_text(a: str, b: str) -> bool:
    """Equal as a person reads them: case, padding and empty trailing name parts aside."""

    def norm(text: str) -> str:
        return " ".join(text.upper().replace("^", " ").split())

    return norm(a) == norm(b)


def _upsert_patient(
    tx: Tx, patient: PatientInfo | None
) -> tuple[int | None, dict[str, dict[str, str]]]:
    """The patient's row (made when new) and what this image says differently from it."""
    if patient is None or not patient.patient_id:
        return None, {}
    row = tx.one(
        "SELECT * FROM patients WHERE patient_id = ? AND issuer = ?",
        (patient.patient_id, patient.issuer),
    )
    if row:
        conflict = {}
        for key in IDENTITY_CHECKED:
            held, given = str(row[key] or ""), str(getattr(patient, key) or "")
            if held and given and not _same_text(held, given):
                conflict[key] = {"held": held, "received": given}
        return int(row["id"]), conflict
    pk = tx.insert(
        "patients",
        {
            "patient_id": patient.patient_id,
            "issuer": patient.issuer,
            "patient_name": patient.patient_name,
            "birth_date": patient.birth_date,
            "sex": patient.sex,
            "created_at": utcnow(),
        },
    )
    return pk, {}


def _upsert_study(tx: Tx, found: Inspection, patient_pk: int | None) -> int | None:
    if not found.study_instance_uid:
        return None
    row = tx.one("SELECT id FROM studies WHERE study_instance_uid = ?", (found.study_instance_uid,))
    if row:
        return int(row["id"])
    return tx.insert(
        "studies",
        {
            "patient_pk": patient_pk,
            "study_instance_uid": found.study_instance_uid,
            "accession_number": found.accession_number,
            "study_date": found.study_date,
            "created_at": utcnow(),
        },
    )
