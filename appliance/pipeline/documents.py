"""A visit's result documents: the coded SR, the PDF report (as Encapsulated PDF), heatmap SCs.

Issued once the visit's protocol is complete (or after its quiet period); images that arrive
later produce a new SR and PDF for the whole visit. Never a second copy of the same content: a
visit whose set of images has not changed since its last document of a kind, and whose
photographs no person has re-decided the eye of since (pipeline/eyes.py), gets none
(``owed``); an excluded photograph is in none of them. Each builder writes its object's file
and returns its ``derived_objects`` row; the caller records it with its outbox jobs in one
transaction (UIDs saved before any send), the one that also clears what the visit owed
(pipeline/due.py). Received headers are read defensively
(pipeline/headers.py), so an odd camera file still gets its documents.

The preliminary SR is UNVERIFIED; a clinician's sign-off re-issues it VERIFIED (desks/review.py)
from the same helpers (``visit_images``, ``eye_findings``, ``sr_images`` and the OCT groups).
A visit's OCT volumes (pipeline/oct_documents.py) add their groups to the SR and their section
to the PDF; a visit with OCT only gets both as well.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from appliance import __version__
from appliance.dicom.op import new_uid, to_bytes
from appliance.dicom.pdf import encapsulated_pdf, report_pdf
from appliance.dicom.report_pdf import Clinic, ReportSignature, findings_in_words
from appliance.dicom.sc import heatmap_sc
from appliance.dicom.sr import OUTCOMES, device_observer_uid, screening_sr
from appliance.domain import VisitOutcome as Outcome
from appliance.pipeline import eyes
from appliance.pipeline.headers import read_header
from appliance.pipeline.oct_documents import (
    DEVICE,
    VisitOct,
    oct_pages,
    oct_reports,
    visit_octs,
)
from appliance.store import BlobStore, Store, utcnow

LOGGER = logging.getLogger(__name__)


def visit_images(
    store: Store, visit_key: str, where: str, params: tuple[Any, ...]
) -> list[dict[str, Any]]:
    """Every DICOM image of the visit: received DICOM captures and OPs made from camera JPEGs;
    not the photographs a person excluded."""
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
    excluded = {k for k, d in eyes.in_force(store, where, params).items() if d.eye is None}
    images = []
    for row in rows:
        if row["capture_id"] in excluded:
            continue
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


@dataclass(frozen=True)
class VisitSources:
    """What a visit's documents are made from: its images, their headers, the models used."""

    images: list[dict[str, Any]]
    headers: list[Dataset]  # read defensively (pipeline/headers.py)
    uids: list[str]  # the referenced SOP Instance UIDs, sorted
    models: list[dict[str, Any]]
    decided_at: str = ""  # the newest eye decision on the visit's photographs ('' when none)
    octs: tuple[VisitOct, ...] = ()  # its OCT volumes (they are among ``images`` too)

    def sr_images(self, eyes: Sequence[Mapping[str, Any]]) -> tuple[list[Dataset], list[Any]]:
        """What the SR references: the images' headers and the OCT groups (``eyes``: the
        outcome's per-eye JSON). A volume with a group is there, not among the images (an OCT
        not analysed stays among them, as evidence)."""
        reports = oct_reports(self.octs, eyes)
        grouped = {r.finding.capture_id for r in reports}
        photos = [
            h for i, h in zip(self.images, self.headers, strict=True)
            if i["capture_id"] not in grouped
        ]  # fmt: skip
        return photos, reports


def visit_sources(
    store: Store, blobs: BlobStore, visit_key: str, where: str, params: tuple[Any, ...]
) -> VisitSources | None:
    """The visit's images and their headers; None when it has no DICOM image to reference."""
    images = visit_images(store, visit_key, where, params)
    if not images:
        return None
    models: list[dict[str, Any]] = next(
        (i["result"].get("models") for i in images if i["result"].get("models")), []
    )
    headers = [read_header(blobs.resolve(i["dicom_path"])) for i in images]
    return VisitSources(
        images=images,
        headers=headers,
        uids=sorted(image["uid"] for image in images),
        models=models,
        decided_at=eyes.latest(store, where, params),
        octs=tuple(visit_octs(store, images, headers, where, params)),
    )


def owed(store: Store, visit_key: str, kind: str, uids: list[str], decided_at: str = "") -> bool:
    """True unless the visit's newest document of ``kind`` already references exactly ``uids``
    and was made after the newest eye decision on its photographs (``decided_at``)."""
    last = store.one(
        "SELECT references_json, created_at FROM derived_objects WHERE visit_key = ? "
        "AND kind = ? ORDER BY id DESC LIMIT 1",
        (visit_key, kind),
    )
    if last is None or json.loads(last["references_json"]) != uids:
        return True
    return bool(decided_at) and decided_at >= last["created_at"]


def build_sr(
    blobs: BlobStore,
    sources: VisitSources,
    *,
    visit_key: str,
    outcome: Outcome,
    outcome_json: dict[str, Any],
    uid_root: str,
    device: Mapping[str, str] = DEVICE,
) -> dict[str, Any]:
    """The preliminary (UNVERIFIED) SR, stored; its ``derived_objects`` row (caller records).
    ``device``: the appliance (``oct_documents.appliance_device``)."""
    observer = {**device, "uid": device_observer_uid(uid_root, device), "version": __version__}
    series, uid = new_uid(uid_root), new_uid(uid_root)
    photos, octs = sources.sr_images(outcome_json["eyes"])
    sr = screening_sr(
        images=photos,
        oct=octs,
        findings_by_eye=eye_findings(outcome_json["eyes"], sources.images),
        models=sources.models,
        device=observer,
        series_instance_uid=series,
        sop_instance_uid=uid,
        uid_root=uid_root,
        outcome=outcome.code if outcome.code in OUTCOMES else None,
    )
    return _row(blobs, "sr", sr, visit_key, sources)


def build_pdf(
    blobs: BlobStore,
    sources: VisitSources,
    *,
    visit_key: str,
    outcome: Outcome,
    outcome_json: dict[str, Any],
    uid_root: str,
    clinic: Clinic | None = None,
) -> dict[str, Any]:
    """The preliminary PDF report (no signature) as Encapsulated PDF, stored; its
    ``derived_objects`` row. ``clinic``: the name and address printed on every page."""
    pdf = report_document(
        blobs, sources, outcome_json=outcome_json, uid_root=uid_root, clinic=clinic
    )
    return _row(blobs, "pdf", pdf, visit_key, sources)


def report_document(
    blobs: BlobStore,
    sources: VisitSources,
    *,
    outcome_json: Mapping[str, Any],
    uid_root: str,
    clinic: Clinic | None = None,
    signature: ReportSignature | None = None,
    replaces: Sequence[Dataset] = (),
    added_findings: Mapping[str, Sequence[str]] | None = None,
) -> Dataset:
    """The PDF report as Encapsulated PDF: preliminary (``signature`` None) or signed, then
    VERIFIED, in the series of the newest report it ``replaces`` (next instance number), naming
    them as predecessors. ``outcome_json``: what the report states as the outcome (``text``,
    ``recall_months``, ``urgency``, ``prompts``) and the per-eye findings (``eyes``);
    ``added_findings``: eye → further sentences after that eye's findings."""
    first = sources.headers[0]
    pdf_bytes = report_pdf(
        patient={
            "name": str(first.get("PatientName", "")),
            "id": str(first.get("PatientID", "")),
            "birth_date": str(first.get("PatientBirthDate", "")),
            "sex": str(first.get("PatientSex", "")),
        },
        study_date=str(first.get("StudyDate", "")),
        eyes=[
            _eye_page(blobs, eye, sources.images, (added_findings or {}).get(eye["eye"], ()))
            for eye in outcome_json["eyes"]
        ],
        outcome=outcome_json,
        models=sources.models,
        disclaimer="The models were trained on synthetic images.",
        clinic=clinic,
        signature=signature,
        oct_pages=oct_pages(blobs, sources.octs, outcome_json["eyes"]),
    )
    newest = replaces[0] if replaces else None
    return encapsulated_pdf(
        pdf_bytes,
        images=sources.headers,
        series_instance_uid=str(newest.SeriesInstanceUID) if newest else new_uid(uid_root),
        sop_instance_uid=new_uid(uid_root),
        instance_number=int(newest.get("InstanceNumber") or 0) + 1 if newest else 1,
        replaces=replaces,
        verified=signature is not None,
    )


BUILDERS: dict[str, Callable[..., dict[str, Any]]] = {"sr": build_sr, "pdf": build_pdf}


def _row(
    blobs: BlobStore, kind: str, ds: Dataset, visit_key: str, sources: VisitSources
) -> dict[str, Any]:
    return {
        "capture_pk": None,
        "visit_key": visit_key,
        "kind": kind,
        "sop_class_uid": str(ds.SOPClassUID),
        "sop_instance_uid": str(ds.SOPInstanceUID),
        "series_instance_uid": str(ds.SeriesInstanceUID),
        "study_instance_uid": str(ds.StudyInstanceUID),
        "file_path": blobs.put(to_bytes(ds), "application/dicom"),
        "references_json": json.dumps(sources.uids),
        "created_at": utcnow(),
    }


def eye_findings(
    eyes: list[dict[str, Any]], images: Sequence[Mapping[str, Any]] = ()
) -> dict[str, dict[str, Any]]:
    """The SR's per-eye findings from a visit outcome's ``eyes`` (JSON); missing eyes left out.

    With the visit's ``images`` (``visit_images`` rows), each eye also names the SOP Instance
    UIDs of the photographs the outcome counted for it (``sop_instance_uids``), so the SR files
    a photograph under the eye a person decided, not the eye its header was labelled with."""
    out = {}
    for eye in eyes:
        if eye["status"] in ("missing", "unresolved"):
            continue
        found = {
            "dr_grade": eye["dr_grade"],
            "referable": eye["referable"],
            "dme": eye["dme"],
            "cdr": eye["cdr"],
            "gradable": eye["status"] == "graded",
            "glaucoma_suspect": eye["glaucoma_suspect"],
        }
        if images and eye.get("capture_ids") is not None:
            counted = set(eye["capture_ids"])
            found["sop_instance_uids"] = [i["uid"] for i in images if i["capture_id"] in counted]
        out[eye["eye"]] = found
    return out


def _camera_jpeg(blobs: BlobStore, path: str) -> bytes | None:
    """The first frame of a DICOM image kept as baseline JPEG; None for anything else."""
    try:
        ds = pydicom.dcmread(io.BytesIO(blobs.read(path)), specific_tags=["PixelData"])
        if ds.file_meta.TransferSyntaxUID != pydicom.uid.JPEGBaseline8Bit:
            return None
        return bytes(next(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=1)))
    except (Exception, RecursionError):  # the report is made without the photograph
        LOGGER.warning("a visit image's photograph could not be read for the report")
        return None


def build_sc(
    store: Store,
    blobs: BlobStore,
    *,
    capture_pk: int,
    visit_key: str,
    source_path: str,
    heatmap: np.ndarray,
    laterality: str | None,
    uid_root: str,
) -> dict[str, Any]:
    """A heatmap as an SC in its source image's study, stored; its ``derived_objects`` row.

    One "AI heatmaps" series per visit and study; the source's header is read defensively.
    """
    source = read_header(blobs.resolve(source_path))
    study = str(source.StudyInstanceUID)
    earlier = store.query(
        "SELECT series_instance_uid FROM derived_objects WHERE kind = 'sc' "
        "AND visit_key = ? AND study_instance_uid = ? ORDER BY id",
        (visit_key, study),
    )
    series = earlier[0]["series_instance_uid"] if earlier else new_uid(uid_root)
    uid = new_uid(uid_root)
    ds = heatmap_sc(
        heatmap,
        source=source,
        series_instance_uid=series,
        sop_instance_uid=uid,
        laterality=laterality if laterality in ("L", "R") else None,
        instance_number=len(earlier) + 1,
    )
    return {
        "capture_pk": capture_pk,
        "kind": "sc",
        "sop_class_uid": str(ds.SOPClassUID),
        "sop_instance_uid": uid,
        "series_instance_uid": series,
        "study_instance_uid": study,
        "file_path": blobs.put(to_bytes(ds), "application/dicom"),
        "references_json": json.dumps([str(source.SOPInstanceUID)]),
        "created_at": utcnow(),
    }


def _eye_page(
    blobs: BlobStore, eye: Mapping[str, Any], images: list[dict[str, Any]], added: Sequence[str]
) -> dict[str, Any]:
    """One eye of the report; ``eye``: a visit outcome's per-eye JSON. Its photographs are the
    ones the outcome counted for this eye (a person's eye decision included; one whose label is
    in question is on no eye's page); an outcome stored before outcomes listed them falls back
    to the photographs' laterality."""
    counted = eye.get("capture_ids")
    if counted is not None:
        mine = [i for i in images if i["capture_id"] in counted]
    else:
        mine = [
            i for i in images if (i["result"].get("finding") or {}).get("laterality") == eye["eye"]
        ]
    best = next((i for i in mine if i["result"].get("gradable")), mine[0] if mine else None)
    photo = heatmap = None
    reasons: list[str] = []
    guidance: list[str] = []
    if best is not None:
        if best["media_type"] == "image/jpeg":
            photo = blobs.read(best["file_path"])
        else:
            photo = _camera_jpeg(blobs, best["dicom_path"])
        if best["result"].get("heatmap"):
            heatmap = blobs.read(best["result"]["heatmap"])
        quality = best["result"].get("quality") or {}
        reasons, guidance = list(quality.get("reasons", [])), list(quality.get("guidance", []))
    findings = findings_in_words(
        dr_grade=eye["dr_grade"],
        dme=eye["dme"],
        cdr=eye["cdr"],
        glaucoma_suspect=eye["glaucoma_suspect"],
    )
    return {
        "eye": eye["eye"],
        "photo_jpeg": photo,
        "heatmap_png": heatmap,
        "gradable": eye["status"] == "graded",
        "quality_reasons": reasons,
        "guidance": guidance,
        "findings": [*findings, *added],
    }
