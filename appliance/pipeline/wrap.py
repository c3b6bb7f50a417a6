"""Photographs that did not arrive as DICOM become Ophthalmic Photography objects.

A camera JPEG's bitstream is wrapped unchanged; a PNG or TIFF keeps its pixels uncompressed
(lossless) (dicom/op.py). The visit's Study Instance UID and the
object's UIDs are assigned once and saved with the object before anything is sent, so a resend
after a crash or an outage never mints a second UID for the same photograph. A photograph taken
for a worklist step carries that step's Accession Number (from its study row) and Request
Attributes Sequence (from the station selection that named the step's Study Instance UID).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from appliance.dicom.op import (
    OP_8BIT,
    REQUEST_ATTRIBUTES,
    OPParameters,
    new_uid,
    op_from_image,
    op_from_jpeg,
    to_bytes,
)
from appliance.domain import PatientInfo
from appliance.store import BlobStore, Store, utcnow
from appliance.visits import DerivedObject

LOGGER = logging.getLogger(__name__)


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


def step_request_attributes(store: Store, study_instance_uid: str) -> list[dict[str, str]]:
    """The Request Attributes of the worklist step chosen at the station for this study."""
    if not study_instance_uid:
        return []
    row = store.one(
        "SELECT request_json FROM station_selections WHERE study_instance_uid = ? "
        "ORDER BY id DESC LIMIT 1",
        (study_instance_uid,),
    )
    if row is None:
        return []
    try:
        items = json.loads(row["request_json"] or "[]")
    except ValueError:
        LOGGER.warning("a station selection holds unreadable request attributes; left out")
        return []
    if not isinstance(items, list):
        return []
    return [
        {k: v for k, v in item.items() if k in REQUEST_ATTRIBUTES and isinstance(v, str)}
        for item in items
        if isinstance(item, dict)
    ]


def wrap_photo(
    blobs: BlobStore,
    data: bytes,
    *,
    media_type: str,
    row: dict[str, Any],
    laterality: str,
    field: str | None,
    study_instance_uid: str,
    uid_root: str,
    request_attributes: Sequence[Mapping[str, str]] = (),
) -> DerivedObject:
    """Write the OP object; return its ``derived_objects`` row (inserted by the caller)."""
    series, sop = new_uid(uid_root), new_uid(uid_root)
    patient = PatientInfo(
        patient_id=row.get("patient_identifier") or "",
        patient_name=row.get("patient_name") or "",
        birth_date=row.get("birth_date") or "",
        sex=row.get("sex") or "",
        issuer=row.get("issuer") or "",
    )
    build = op_from_jpeg if media_type == "image/jpeg" else op_from_image
    ds = build(
        data,
        OPParameters(
            laterality=laterality,
            patient=patient,
            study_instance_uid=study_instance_uid,
            series_instance_uid=series,
            sop_instance_uid=sop,
            uid_root=uid_root,
            field=field,
            accession_number=row.get("accession_number") or "",
            request_attributes=request_attributes,
        ),
    )
    path = blobs.put(to_bytes(ds), "application/dicom")
    return DerivedObject(
        kind="op",
        capture_pk=row["id"],
        sop_class_uid=OP_8BIT,
        sop_instance_uid=sop,
        series_instance_uid=series,
        study_instance_uid=study_instance_uid,
        file_path=path,
        created_at=utcnow(),
    )
