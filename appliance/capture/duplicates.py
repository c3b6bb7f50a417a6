"""Content the appliance already holds, arriving again.

An identical resend (the same bytes, or for DICOM the same dataset under another File Meta) of
the same patient's photograph is a success that stores nothing new: "already received", the
first copy kept, as archives do. Other content under a held SOP Instance UID is refused as a
security alert (``UIDConflict``). The same bytes for *another* patient (another sidecar or
upload identity; or a held copy with no patient) are refused as a data-integrity alert
(``OtherPatientsPhotograph``, HTTP 409): filing them as the first patient's copy would leave
the second patient's visit silently without that eye.
"""

from __future__ import annotations

from typing import Any

from appliance.capture.decode import Inspection, dataset_identity
from appliance.domain import Capture, PatientInfo, Source
from appliance.errors import OtherPatientsPhotograph, RejectedInput
from appliance.store import BlobStore, Store


class UIDConflict(RejectedInput):
    """A SOP Instance UID already held for other content: refused, the first copy kept."""

    reason = "uid_conflict"

    def __init__(self, message: str, *, detail: dict[str, Any]) -> None:
        super().__init__(message)
        self.detail = detail


def existing(store: Store, found: Inspection, digest: str) -> dict[str, Any] | None:
    """The held capture with this SOP Instance UID, else with these bytes; None when new."""
    if found.sop_instance_uid:
        row = store.one(
            "SELECT * FROM captures WHERE sop_instance_uid = ?", (found.sop_instance_uid,)
        )
        if row is not None:
            return row
    return store.one("SELECT * FROM captures WHERE content_sha256 = ?", (digest,))


def same_object(blobs: BlobStore, data: bytes, row: dict[str, Any], digest: str) -> bool:
    """The held copy is this object: the same bytes, or the same dataset (meta aside)."""
    if digest == row["content_sha256"]:
        return True
    if row["media_type"] != "application/dicom" or row.get("purged_at"):
        return False
    try:
        held = blobs.read(row["file_path"])
    except OSError:
        return False
    mine = dataset_identity(data)
    return mine is not None and mine == dataset_identity(held)


def held_patient(store: Store, row: dict[str, Any]) -> PatientInfo | None:
    """The patient a held capture is filed under, None when it has none."""
    if row["patient_pk"] is None:
        return None
    held = store.one("SELECT * FROM patients WHERE id = ?", (row["patient_pk"],))
    if held is None:
        return None
    return PatientInfo(**{k: held[k] or "" for k in ("patient_id", "patient_name", "birth_date",
                                                     "sex", "issuer")})  # fmt: skip


def check(
    store: Store,
    blobs: BlobStore,
    data: bytes,
    found: Inspection,
    row: dict[str, Any],
    digest: str,
    patient: PatientInfo | None,
) -> PatientInfo | None:
    """Raise unless this is an identical resend for the same patient; returns the patient the
    held copy is filed under. A file with no identity of its own is the held copy again."""
    if not same_object(blobs, data, row, digest):
        raise UIDConflict(
            "SOP Instance UID already held with other content (first kept)",
            detail={
                "capture_id": row["id"],
                "sop_instance_uid": found.sop_instance_uid or "",
                "held_sha256": row["content_sha256"],
                "sha256": digest,
                "patient_id": found.patient.patient_id if found.patient else "",
                "study_instance_uid": found.study_instance_uid or "",
            },
        )
    held = held_patient(store, row)
    if (
        patient is not None
        and patient.patient_id
        and (held is None or (held.patient_id, held.issuer) != (patient.patient_id, patient.issuer))
    ):
        raise OtherPatientsPhotograph(
            capture_id=int(row["id"]),
            held_patient_id=held.patient_id if held else "",
            patient_id=patient.patient_id,
        )
    return held


def again(row: dict[str, Any], found: Inspection, held: PatientInfo | None) -> Capture:
    """The held capture, as the answer to an identical resend."""
    return Capture(
        id=row["id"],
        source=Source(row["source"]),
        media_type=row["media_type"],
        content_sha256=row["content_sha256"],
        file_path=row["file_path"],
        size_bytes=row["size_bytes"],
        received_at=row["received_at"],
        laterality=row["laterality"],
        laterality_source=row["laterality_source"],
        sop_class_uid=row["sop_class_uid"],
        sop_instance_uid=row["sop_instance_uid"],
        study_instance_uid=found.study_instance_uid,
        patient=held or PatientInfo(),
        calling_ae=row["calling_ae"],
        duplicate=True,
    )
