"""Camera JPEGs that did not arrive as DICOM become Ophthalmic Photography objects.

The JPEG bitstream is wrapped unchanged (dicom/op.py). The visit's Study Instance UID and the
object's UIDs are assigned once and saved with the object before anything is sent, so a resend
after a crash or an outage never mints a second UID for the same photograph.
"""

from __future__ import annotations

from typing import Any

from appliance.dicom.op import OP_8BIT, OPParameters, new_uid, op_from_jpeg, to_bytes
from appliance.domain import PatientInfo
from appliance.store import BlobStore, Store, Tx, utcnow


def visit_study_uid(store: Store, visit_key: str, uid_root: str) -> str:
    """The visit's Study Instance UID, created once and kept."""
    with store.write() as tx:
        row = tx.one(
            "SELECT study_instance_uid FROM visit_studies WHERE visit_key = ?", (visit_key,)
        )
        if row is not None:
            return str(row["study_instance_uid"])
        uid = new_uid(uid_root)
        tx.insert(
            "visit_studies",
            {"visit_key": visit_key, "study_instance_uid": uid, "created_at": utcnow()},
        )
        return uid


def wrap_jpeg(
    blobs: BlobStore,
    jpeg: bytes,
    *,
    row: dict[str, Any],
    laterality: str,
    field: str | None,
    study_instance_uid: str,
    uid_root: str,
) -> dict[str, Any]:
    """Write the OP object; return its ``derived_objects`` row (inserted by the caller)."""
    series, sop = new_uid(uid_root), new_uid(uid_root)
    patient = PatientInfo(
        patient_id=row.get("patient_identifier") or "",
        patient_name=row.get("patient_name") or "",
        birth_date=row.get("birth_date") or "",
        sex=row.get("sex") or "",
        issuer=row.get("issuer") or "",
    )
    ds = op_from_jpeg(
        jpeg,
        OPParameters(
            laterality=laterality,
            patient=patient,
            study_instance_uid=study_instance_uid,
            series_instance_uid=series,
            sop_instance_uid=sop,
            uid_root=uid_root,
            field=field,
        ),
    )
    path = blobs.put(to_bytes(ds), "application/dicom")
    return {
        "capture_pk": row["id"],
        "kind": "op",
        "sop_class_uid": OP_8BIT,
        "sop_instance_uid": sop,
        "series_instance_uid": series,
        "study_instance_uid": study_instance_uid,
        "file_path": path,
        "created_at": utcnow(),
    }


def record(tx: Tx, derived: dict[str, Any], visit_key: str) -> None:
    tx.insert("derived_objects", {**derived, "visit_key": visit_key})
