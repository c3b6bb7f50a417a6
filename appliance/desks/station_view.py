"""What the camera station shows of a visit: photographs, verdicts, checklist, outcome, report.

A selection's visit is its study's photographs plus any of the same patient received since it
was chosen (a camera that sends DICOM keeps its own study). All reads for one view happen in
one read transaction, so a verdict is never shown without its photograph. Thumbnails are small
JPEGs made from the stored file (any accepted format); the report is the plain PDF taken out
of the stored Encapsulated PDF object.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import pydicom
from PIL import Image

from appliance.capture.decode import Limits, decode_rgb
from appliance.desks.signers import OUTCOME_WORDS, oct_dme_words
from appliance.dicom.oct_pictures import thickness_map_rgb
from appliance.errors import ApplianceError
from appliance.pipeline import eyes
from appliance.pipeline.eyes import EyeDecision
from appliance.pipeline.oct import thickness_map
from appliance.store import BlobStore, Store
from appliance.visits import ImageRecord, OctRecord, visit_key

THUMBNAIL_PX = 320
EYES = ("R", "L")  # the checklist's order: right eye first, as clinics record them


class NotFound(ApplianceError):
    http_status = 404
    reason = "not_found"


@dataclass(frozen=True)
class Selection:
    id: int
    source: str  # "worklist" / "walk-in"
    patient_id: str
    issuer: str
    patient_name: str
    birth_date: str
    sex: str
    accession_number: str
    study_instance_uid: str
    request_attributes: tuple[dict[str, str], ...]
    selected_at: str

    def fields(self) -> dict[str, str]:
        """The identity fields an upload or a hot-folder file takes from this selection."""
        return {
            "patient_id": self.patient_id,
            "issuer": self.issuer,
            "patient_name": self.patient_name,
            "birth_date": self.birth_date,
            "sex": self.sex,
            "accession_number": self.accession_number,
            "study_instance_uid": self.study_instance_uid,
        }

    @property
    def description(self) -> str:
        return next(
            (
                r["ScheduledProcedureStepDescription"]
                for r in self.request_attributes
                if r.get("ScheduledProcedureStepDescription")
            ),
            "",
        )


@dataclass(frozen=True)
class CaptureView:
    id: int
    number: int  # 1, 2, ... in the order received
    received: str  # local HH:MM
    source: str
    state: str  # "checking", "checked", "failed"
    eye: str | None  # "R" / "L" it counts for: decided, else labelled, else detected; None
    # while the label is in question or when excluded
    eye_detected: bool  # True when the eye came from the photo, not a label
    field: str | None  # "macula" / "disc"
    gradable: bool | None
    reasons: tuple[str, ...]
    guidance: tuple[str, ...]  # the quality gate's plain-words retake advice
    mismatch: bool  # the label and the photo disagree about the eye, and nobody decided yet
    failure: str
    sop_instance_uid: str
    other_study: bool  # arrived with its own DICOM study, not the selection's
    human_grading: tuple[str, ...] = ()  # why the models' results were withheld for a grader
    label: str | None = None  # the eye label given (form, sidecar, DICOM), None when none
    detected: str | None = None  # the eye the photo looks like (a confident detection)
    decision: EyeDecision | None = None  # a person's decision on its eye, in force
    superseded: bool = False  # not gradable, but a later gradable photo of its eye counts
    purged: bool = False  # its file was deleted under the retention policy
    oct: str | None = None  # an OCT's verdict line (CST, DME yes/no, or why not analysed)


@dataclass(frozen=True)
class EyeCheck:
    eye: str  # "R" / "L"
    status: str  # "graded", "ungradable", "missing", "checking"


@dataclass(frozen=True)
class Refused:
    """A photograph for this patient refused because the same bytes belong to another
    patient (desks/station.py: shown since the patient was chosen)."""

    at: str  # ISO 8601 UTC
    source: str  # upload / hotfolder
    capture_id: int  # the held copy
    held_patient_id: str  # whose it is ('' when it has no patient); shown only to some roles


@dataclass(frozen=True)
class StationVisit:
    selection: Selection
    captures: tuple[CaptureView, ...]
    eyes: tuple[EyeCheck, ...]
    outcome: dict[str, Any] | None  # pipeline/visit.py's outcome JSON
    report_id: int | None  # derived_objects.id of the newest PDF report
    digest: str  # changes whenever anything shown changes
    visit_keys: tuple[str, ...] = ()  # the pipeline's visits these photographs belong to
    signed: str = ""  # the current signed decision: "Signed by Dr A. Grader, MD — Refer …"
    refused: tuple[Refused, ...] = ()  # photographs refused as another patient's

    @property
    def sop_instance_uids(self) -> list[str]:
        return [c.sop_instance_uid for c in self.captures if c.sop_instance_uid]


@dataclass(frozen=True)
class Report:
    pdf: bytes
    document_id: int
    sop_instance_uid: str
    study_instance_uid: str
    patient_id: str
    created_at: str


@contextmanager
def _snapshot(store: Store) -> Iterator[None]:
    """Reads inside see one state of the database."""
    conn = store.reader().conn
    conn.execute("BEGIN")
    try:
        yield
    finally:
        conn.execute("ROLLBACK")


def read_visit(store: Store, selection: Selection) -> StationVisit:
    """The selection's photographs (its study, and the patient's since it was chosen)."""
    with _snapshot(store):
        rows = store.query(
            "SELECT c.id, c.source, c.status, c.status_reason, c.received_at, c.laterality, "
            "c.sop_instance_uid, c.study_pk, c.patient_pk, s.study_instance_uid, "
            "(SELECT r.payload FROM results r WHERE r.capture_pk = c.id AND r.kind = 'screening' "
            " ORDER BY r.id DESC LIMIT 1) AS payload "
            "FROM captures c LEFT JOIN studies s ON s.id = c.study_pk "
            "LEFT JOIN patients p ON p.id = c.patient_pk "
            "WHERE s.study_instance_uid = ? "
            "OR (p.patient_id = ? AND p.issuer = ? AND c.received_at >= ?) ORDER BY c.id",
            (
                selection.study_instance_uid,
                selection.patient_id,
                selection.issuer,
                selection.selected_at,
            ),
        )
        decided = eyes.of_captures(store, [row["id"] for row in rows])
        refused = _refused(store, selection)
        keys = sorted({visit_key(row) for row in rows})
        primary = next(
            (visit_key(r) for r in rows if r["study_instance_uid"] == selection.study_instance_uid),
            "",
        )
        outcome_row = report_row = None
        if keys:  # the selection's own study first, then the newest
            marks = ", ".join("?" for _ in keys)
            outcome_row = store.one(
                f"SELECT id, payload FROM visit_outcomes WHERE visit_key IN ({marks}) "
                "ORDER BY visit_key = ? DESC, id DESC LIMIT 1",
                (*keys, primary),
            )
            report_row = store.one(
                f"SELECT id FROM derived_objects WHERE kind = 'pdf' AND visit_key IN ({marks}) "
                "ORDER BY visit_key = ? DESC, id DESC LIMIT 1",
                (*keys, primary),
            )
    outcome = json.loads(outcome_row["payload"]) if outcome_row else None
    captures = mark_superseded(
        tuple(
            capture_view(n, row, selection.study_instance_uid, decided.get(row["id"]), outcome)
            for n, row in enumerate(rows, 1)
        ),
        outcome,
    )
    report_id = int(report_row["id"]) if report_row else None
    signed = signed_line(store, outcome_row["id"]) if outcome_row else ""
    shown = [
        selection.id,
        [(c.id, c.state, c.decision.id if c.decision else None) for c in captures],
        outcome_row["id"] if outcome_row else None,
        report_id,
        signed,
        [r.at for r in refused],
    ]
    return StationVisit(
        selection=selection,
        captures=captures,
        eyes=checklist(captures, outcome),
        outcome=outcome,
        report_id=report_id,
        digest=hashlib.sha256(json.dumps(shown).encode()).hexdigest()[:32],
        visit_keys=tuple(keys),
        signed=signed,
        refused=refused,
    )


def signed_line(store: Store, outcome_id: int) -> str:
    """The newest sign-off of this very outcome (none once new photographs changed it)."""
    row = store.one(
        "SELECT r.outcome_code, r.signer_name, r.signer_credentials, r.payload, u.username "
        "FROM reviews r "
        "JOIN users u ON u.id = r.user_pk JOIN visit_outcomes vo ON vo.visit_key = r.visit_key "
        "WHERE vo.id = ? AND json_extract(r.payload, '$.outcome_id') = ? ORDER BY r.id DESC",
        (outcome_id, outcome_id),
    )
    if row is None:
        return ""
    name = row["signer_name"] or row["username"]
    who = f"{name}, {row['signer_credentials']}" if row["signer_credentials"] else name
    line = f"Signed by {who} — {OUTCOME_WORDS.get(row['outcome_code'], row['outcome_code'])}"
    answers = json.loads(row["payload"] or "{}").get("oct_dme") or {}
    for eye in sorted(answers, reverse=True):  # right eye first
        line += f" — {oct_dme_words(eye, bool(answers[eye]))}"
    return line


def _refused(store: Store, selection: Selection) -> tuple[Refused, ...]:
    """This patient's photographs refused since the selection as another patient's."""
    rows = store.query(
        "SELECT event_time, detail FROM audit_events WHERE patient_id = ? AND event_id = "
        "'110113' AND json_extract(detail, '$.alert') = 'duplicate_other_patient' "
        "AND event_time >= ? ORDER BY seq",
        (selection.patient_id, selection.selected_at),
    )
    out = []
    for row in rows:
        detail = json.loads(row["detail"])
        out.append(
            Refused(
                at=row["event_time"],
                source=str(detail.get("source", "")),
                capture_id=int(detail.get("capture_id") or 0),
                held_patient_id=str(detail.get("held_patient_id") or ""),
            )
        )
    return tuple(out)


def capture_identity(store: Store, capture_id: int) -> dict[str, str]:
    """Whose photograph a capture is (for the audit event of whoever is shown it)."""
    row = store.one(
        "SELECT c.sop_instance_uid, p.patient_id, s.study_instance_uid FROM captures c "
        "LEFT JOIN patients p ON p.id = c.patient_pk "
        "LEFT JOIN studies s ON s.id = c.study_pk WHERE c.id = ?",
        (capture_id,),
    )
    if row is None:
        raise NotFound("there is no such photograph")
    return {key: row[key] or "" for key in row}


def thumbnail(
    store: Store, blobs: BlobStore, limits: Limits, capture_id: int, size: int = THUMBNAIL_PX
) -> bytes:
    """A small JPEG of a stored photograph (any accepted format, DICOM included); of an OCT,
    its central B-scan with the measured layers drawn and, beside it, its thickness map with
    the ETDRS circles (a gradable volume)."""
    row = store.one("SELECT file_path, media_type FROM captures WHERE id = ?", (capture_id,))
    if row is None:
        raise NotFound("there is no such photograph")
    result = store.one(
        "SELECT payload FROM results WHERE capture_pk = ? AND kind = 'screening' "
        "ORDER BY id DESC LIMIT 1",
        (capture_id,),
    )
    scan = ImageRecord.parse(result["payload"] if result else None).oct
    bscan = scan.bscan_layers if scan is not None else None
    data = blobs.read(bscan or row["file_path"])
    if bscan and scan is not None:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as img:
            picture = _beside(img.convert("RGB"), _thickness_picture(blobs, scan))
    elif row["media_type"] == "image/jpeg":
        with Image.open(io.BytesIO(data), formats=["JPEG"]) as img:
            img.draft("RGB", (size, size))  # decode at a reduced scale: fast
            picture = img.convert("RGB")
    else:
        picture = Image.fromarray(decode_rgb(data, limits))
    picture.thumbnail((size, size))
    out = io.BytesIO()
    picture.save(out, "JPEG", quality=80)
    return out.getvalue()


def _thickness_picture(blobs: BlobStore, scan: OctRecord) -> Image.Image | None:
    """The OCT's thickness map in colour with the ETDRS circles on its fovea; None without."""
    values = thickness_map(blobs, scan)
    if values is None or scan.map_spacing_mm is None:
        return None
    fovea = (scan.finding or {}).get("fovea_mm")
    centre = (float(fovea[0]), float(fovea[1])) if fovea else None
    return Image.fromarray(thickness_map_rgb(values, scan.map_spacing_mm, centre, mm_per_px=0.05))


def _beside(left: Image.Image, right: Image.Image | None) -> Image.Image:
    if right is None:
        return left
    right = right.resize((max(1, round(right.width * left.height / right.height)), left.height))
    canvas = Image.new("RGB", (left.width + 8 + right.width, left.height), "white")
    canvas.paste(left, (0, 0))
    canvas.paste(right, (left.width + 8, 0))
    return canvas


def report(
    store: Store, blobs: BlobStore, document_id: int, visit_keys: tuple[str, ...] | None = None
) -> Report:
    """The plain PDF inside a stored Encapsulated PDF report (of one of ``visit_keys``, if
    given: a report of any other visit is "not found")."""
    row = store.one("SELECT * FROM derived_objects WHERE id = ? AND kind = 'pdf'", (document_id,))
    if row is None or (visit_keys is not None and row["visit_key"] not in visit_keys):
        raise NotFound("there is no such report")
    ds = pydicom.dcmread(io.BytesIO(blobs.read(row["file_path"])))
    document = bytes(ds.EncapsulatedDocument)
    length = ds.get("EncapsulatedDocumentLength")
    pdf = document[: int(length)] if length else document.rstrip(b"\0")
    return Report(
        pdf=pdf,
        document_id=int(row["id"]),
        sop_instance_uid=row["sop_instance_uid"],
        study_instance_uid=row["study_instance_uid"],
        patient_id=str(ds.get("PatientID", "")),
        created_at=row["created_at"],
    )


def oct_line(record: ImageRecord, capture_id: int, outcome: dict[str, Any] | None) -> str | None:
    """An OCT capture's verdict in one line: its CST and the rules' DME answer for the eye."""
    scan = record.oct
    if scan is None:
        return None
    finding = scan.finding
    if finding is None:
        return str(record.data.get("message") or "OCT received and stored; not analysed.")
    if not finding.get("gradable"):
        return "OCT not gradable — no macular oedema answer; retake the OCT scan."
    eyes_of: list[dict[str, Any]] = (outcome or {}).get("eyes", [])
    eye = next((e for e in eyes_of if capture_id in e.get("oct_capture_ids", [])), {})
    cst = finding.get("cst_um")
    line = f"OCT: central subfield {cst:.0f} µm" if cst is not None else "OCT: centre not measured"
    threshold = eye.get("cst_threshold_um")
    if eye.get("oct_dme") is True:
        line += " — centre-involving macular oedema: yes"
    elif eye.get("oct_dme") is False:
        line += " — centre-involving macular oedema: no"
    elif outcome is not None and outcome.get("code") != "no_model":
        line += " — no automated macular oedema answer: a grader will review it"
    if threshold is not None:
        line += f" (threshold {threshold:.0f} µm for this device)"
    return line


def capture_view(
    number: int,
    row: dict[str, Any],
    study_uid: str,
    decision: EyeDecision | None,
    outcome: dict[str, Any] | None = None,
) -> CaptureView:
    record = ImageRecord.parse(row["payload"])
    quality = record.quality
    state = {"received": "checking", "processed": "checked"}.get(row["status"], "failed")
    eye = eyes.counted_eye(record, decision) if record.data else row["laterality"]
    return CaptureView(
        id=int(row["id"]),
        number=number,
        received=datetime.fromisoformat(row["received_at"]).astimezone().strftime("%H:%M"),
        source=row["source"],
        state=state,
        eye=eye if eye in EYES else None,
        eye_detected=decision is None and record.laterality_source == "detected",
        field=record.field,
        gradable=record.gradable,
        reasons=tuple(quality.get("reasons") or ()),
        guidance=tuple(quality.get("guidance") or ()),
        mismatch=eyes.in_question(record, decision),
        failure=(row["status_reason"] or "") if state == "failed" else "",
        sop_instance_uid=row["sop_instance_uid"] or "",
        other_study=row["study_instance_uid"] != study_uid,
        human_grading=record.human_grading,
        label=row["laterality"],
        detected=record.data.get("laterality_detected"),
        decision=decision,
        oct=oct_line(record, int(row["id"]), outcome),
    )


def checklist(
    captures: tuple[CaptureView, ...], outcome: dict[str, Any] | None
) -> tuple[EyeCheck, ...]:
    """Per eye: the outcome stage's status, or "checking" while a photo of it is analysed."""
    decided = {eye["eye"]: eye["status"] for eye in (outcome or {}).get("eyes", [])}
    checks = []
    for eye in EYES:
        status = decided.get(eye, "missing")
        checking = any(c.state == "checking" and c.eye == eye for c in captures)
        if status != "graded" and checking:
            status = "checking"
        checks.append(EyeCheck(eye=eye, status=status))
    return tuple(checks)


def mark_superseded(
    captures: tuple[CaptureView, ...], outcome: dict[str, Any] | None
) -> tuple[CaptureView, ...]:
    """A not-gradable photo of an eye that is done, with a gradable photo of that eye taken
    after it, is superseded: it needs no retake (the checklist and the outcome agree)."""
    done = {eye["eye"] for eye in (outcome or {}).get("eyes", []) if eye["status"] == "graded"}
    out = []
    for c in captures:
        later = any(
            d.number > c.number
            and d.eye == c.eye
            and d.state == "checked"
            and d.gradable
            and d.oct is None  # an OCT never stands in for a photograph
            for d in captures
        )
        replaced = c.state == "checked" and c.gradable is False and c.eye in done and not c.mismatch
        out.append(replace(c, superseded=True) if replaced and later else c)
    return tuple(out)
