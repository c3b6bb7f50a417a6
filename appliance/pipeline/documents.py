"""A visit's result documents: the coded SR and the PDF report (as Encapsulated PDF).

Issued once the visit's protocol is complete; images that arrive later produce a new SR and
PDF for the whole visit. Never a second copy of the same content: a visit whose set of images
has not changed since its last documents gets none. UIDs are saved with the objects before any
send.

The preliminary SR is UNVERIFIED; a clinician's sign-off re-issues it VERIFIED (pipeline/review.py)
from the same helpers (``visit_images``, ``eye_findings``).
"""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import pydicom
from pydicom.dataset import Dataset

from appliance import __version__
from appliance.dicom.op import new_uid, to_bytes
from appliance.dicom.pdf import encapsulated_pdf, report_pdf
from appliance.dicom.report_pdf import findings_in_words
from appliance.dicom.sr import OUTCOMES, screening_sr
from appliance.domain import Outcome
from appliance.inference import DISCLAIMER
from appliance.store import BlobStore, Store, utcnow

LOGGER = logging.getLogger(__name__)
DEVICE = {
    "name": "Retinal screening appliance",
    "manufacturer": "Demonstration",
    "model": "retina-appliance",
    "serial": "0001",
}


def visit_images(
    store: Store, visit_key: str, where: str, params: tuple[Any, ...]
) -> list[dict[str, Any]]:
    """Every DICOM image of the visit: received DICOM captures and OPs made from camera JPEGs."""
    rows = store.query(
        "SELECT c.id AS capture_id, c.file_path, c.sop_instance_uid, c.media_type, r.payload "
        "FROM captures c JOIN results r ON r.capture_pk = c.id AND r.kind = 'screening' "
        f"WHERE {where} ORDER BY c.id",
        params,
    )
    derived = {
        row["capture_pk"]: row
        for row in store.query(
            "SELECT * FROM derived_objects WHERE visit_key = ? AND kind = 'op'", (visit_key,)
        )
    }
    images = []
    for row in rows:
        payload = json.loads(row["payload"])
        if row["media_type"] == "application/dicom":
            dicom_path, uid = row["file_path"], row["sop_instance_uid"]
        elif row["capture_id"] in derived:
            op = derived[row["capture_id"]]
            dicom_path, uid = op["file_path"], op["sop_instance_uid"]
        else:
            continue
        images.append({**row, "dicom_path": dicom_path, "uid": uid, "result": payload})
    return images


def build_documents(
    store: Store,
    blobs: BlobStore,
    *,
    visit_key: str,
    where: str,
    params: tuple[Any, ...],
    outcome: Outcome,
    outcome_json: dict[str, Any],
    uid_root: str,
    incomplete_ok: bool = False,
) -> list[dict[str, Any]]:
    """Build and store SR + Encapsulated PDF; return their derived rows (caller records them).

    Only for a complete visit, unless ``incomplete_ok`` (the visit's quiet period is over).
    """
    if not outcome.complete and not incomplete_ok:
        return []
    images = visit_images(store, visit_key, where, params)
    uids = sorted(image["uid"] for image in images)
    if not images:
        return []
    last = store.one(
        "SELECT references_json FROM derived_objects WHERE visit_key = ? AND kind = 'sr' "
        "ORDER BY id DESC LIMIT 1",
        (visit_key,),
    )
    if last is not None and json.loads(last["references_json"]) == uids:
        return []  # nothing new since the last documents
    datasets: list[Dataset] = [pydicom.dcmread(blobs.resolve(i["dicom_path"])) for i in images]
    models: list[dict[str, Any]] = next(
        (i["result"].get("models") for i in images if i["result"].get("models")), []
    )
    findings_by_eye = eye_findings(outcome_json["eyes"])
    device = {**DEVICE, "uid": new_uid(uid_root), "version": __version__}
    sr_series, sr_uid = new_uid(uid_root), new_uid(uid_root)
    sr = screening_sr(
        images=datasets,
        findings_by_eye=findings_by_eye,
        models=models,
        device=device,
        series_instance_uid=sr_series,
        sop_instance_uid=sr_uid,
        uid_root=uid_root,
        outcome=outcome.code if outcome.code in OUTCOMES else None,
    )
    pdf_bytes = report_pdf(
        patient={
            "name": str(datasets[0].get("PatientName", "")),
            "id": str(datasets[0].get("PatientID", "")),
            "birth_date": str(datasets[0].get("PatientBirthDate", "")),
            "sex": str(datasets[0].get("PatientSex", "")),
        },
        study_date=str(datasets[0].get("StudyDate", "")),
        eyes=[_eye_page(blobs, eye_outcome, images) for eye_outcome in outcome.eyes],
        outcome=outcome_json,
        models=models,
        disclaimer=DISCLAIMER,
    )
    pdf_series, pdf_uid = new_uid(uid_root), new_uid(uid_root)
    pdf = encapsulated_pdf(
        pdf_bytes, images=datasets, series_instance_uid=pdf_series, sop_instance_uid=pdf_uid
    )
    study = str(datasets[0].StudyInstanceUID)
    rows = []
    for kind, ds, series, uid in (("sr", sr, sr_series, sr_uid), ("pdf", pdf, pdf_series, pdf_uid)):
        rows.append(
            {
                "capture_pk": None,
                "visit_key": visit_key,
                "kind": kind,
                "sop_class_uid": str(ds.SOPClassUID),
                "sop_instance_uid": uid,
                "series_instance_uid": series,
                "study_instance_uid": study,
                "file_path": blobs.put(to_bytes(ds), "application/dicom"),
                "references_json": json.dumps(uids),
                "created_at": utcnow(),
            }
        )
    return rows


def eye_findings(eyes: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The SR's per-eye findings from a visit outcome's ``eyes`` (JSON); missing eyes left out."""
    return {
        eye["eye"]: {
            "dr_grade": eye["dr_grade"],
            "referable": eye["referable"],
            "dme": eye["dme"],
            "cdr": eye["cdr"],
            "gradable": eye["status"] == "graded",
            "glaucoma_suspect": eye["glaucoma_suspect"],
        }
        for eye in eyes
        if eye["status"] != "missing"
    }


def _eye_page(blobs: BlobStore, eye: Any, images: list[dict[str, Any]]) -> dict[str, Any]:
    mine = [i for i in images if (i["result"].get("finding") or {}).get("laterality") == eye.eye]
    best = next((i for i in mine if i["result"].get("gradable")), mine[0] if mine else None)
    photo = heatmap = None
    reasons: list[str] = []
    guidance: list[str] = []
    if best is not None:
        if best["media_type"] == "image/jpeg":
            photo = blobs.read(best["file_path"])
        else:
            ds = pydicom.dcmread(io.BytesIO(blobs.read(best["dicom_path"])))
            if ds.file_meta.TransferSyntaxUID == pydicom.uid.JPEGBaseline8Bit:
                photo = next(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=1))
        if best["result"].get("heatmap"):
            heatmap = blobs.read(best["result"]["heatmap"])
        quality = best["result"].get("quality") or {}
        reasons, guidance = list(quality.get("reasons", [])), list(quality.get("guidance", []))
    return {
        "eye": eye.eye,
        "photo_jpeg": photo,
        "heatmap_png": heatmap,
        "gradable": eye.status == "graded",
        "quality_reasons": reasons,
        "guidance": guidance,
        "findings": findings_in_words(
            dr_grade=eye.dr_grade, dme=eye.dme, cdr=eye.cdr, glaucoma_suspect=eye.glaucoma_suspect
        ),
    }
