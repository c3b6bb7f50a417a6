"""A given eye label that the detection contradicts: the photograph counts for neither eye until
a person decides; each decision (keep the label, use the detected eye, exclude) re-derives the
outcome and the visit's SR and PDF, and is audited. The same walk for the three ways a label
is given: the upload form, a hot-folder sidecar, and DICOM ImageLaterality over a real C-STORE.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pynetdicom import AE

from appliance.capture import Incoming
from appliance.config import Settings
from appliance.dicom.op import new_uid
from appliance.domain import Source
from appliance.errors import RejectedInput
from tests.conftest import jpeg_bytes, op_bytes, wait_for

MODELS = Path(__file__).resolve().parents[2] / "models"
PATIENT = "EYE-01"
SLOW = 120.0
CONFLICT = "the photograph labelled Right (OD) looks like a left eye"


def photo_rgb(eye: str) -> Any:
    from appliance.synth.case import render_case
    from appliance.synth.dataset import case_for

    case = next(
        c for c in (case_for(6160, i, (600, 800)) for i in range(200))
        if c.eye == eye and c.field == "macula" and c.defect is None
    )  # fmt: skip
    return render_case(case)


@pytest.fixture
def screening(settings: Settings) -> Iterator[Any]:
    from appliance.runtime.services import Services

    services = Services(settings.replace(models_dir=str(MODELS)))
    services.start()
    try:
        yield services
    finally:
        services.stop()


def send_upload(services: Any, rgb: Any, label: str) -> None:
    services.ingestor.ingest(
        Incoming(
            data=jpeg_bytes(rgb),
            source=Source.UPLOAD,
            user_id="op1",
            fields={"patient_id": PATIENT, "patient_name": "Eye^Test", "laterality": label},
        )
    )


def send_hotfolder(services: Any, rgb: Any, label: str) -> None:
    inbox = services.settings.inbox_path
    name = f"IMG_{len(list(inbox.glob('*'))) + len(captures(services))}_{label}"
    sidecar = {"patient_id": PATIENT, "patient_name": "Eye^Test", "laterality": label}
    (inbox / f"{name}.json").write_text(json.dumps(sidecar), encoding="utf-8")
    (inbox / f"{name}.jpg").write_bytes(jpeg_bytes(rgb))
    count = len(captures(services))
    wait_for(lambda: len(captures(services)) > count, SLOW)


STUDY = new_uid()


def send_dicom(services: Any, rgb: Any, label: str) -> None:
    ds = pydicom.dcmread(
        io.BytesIO(op_bytes(rgb, laterality=label, patient_id=PATIENT, study_instance_uid=STUDY))
    )
    ae = AE(ae_title="CAMERA1")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    settings = services.settings
    assoc = ae.associate("127.0.0.1", settings.dicom_port, ae_title=settings.dicom_ae_title)
    assert assoc.is_established
    try:
        status = assoc.send_c_store(ds)
    finally:
        assoc.release()
    assert int(status.Status) == 0


def captures(services: Any) -> list[dict[str, Any]]:
    return services.store.query("SELECT * FROM captures ORDER BY id")


def outcome(services: Any) -> dict[str, Any]:
    row = services.store.one("SELECT payload FROM visit_outcomes ORDER BY id DESC LIMIT 1")
    return json.loads(row["payload"])


def eyes(found: dict[str, Any]) -> dict[str, str]:
    return {eye["eye"]: eye["status"] for eye in found["eyes"]}


def documents(services: Any, kind: str) -> list[dict[str, Any]]:
    return services.store.query("SELECT * FROM derived_objects WHERE kind = ? ORDER BY id", (kind,))


def sr_eyes(services: Any, row: dict[str, Any]) -> dict[str, set[str]]:
    """The SR's per-eye groups: the group's tracking identifier text ("... right eye") → the SOP
    Instance UIDs of its source images."""
    import pydicom

    ds = pydicom.dcmread(services.blobs.resolve(row["file_path"]))
    out: dict[str, set[str]] = {}

    def walk(items: Any) -> None:
        for item in items:
            content = list(getattr(item, "ContentSequence", []))
            texts = [c.TextValue for c in content if getattr(c, "ValueType", "") == "TEXT"]
            eye = next(("R" if "right" in t else "L" for t in texts if "eye" in t), None)
            if eye is not None:
                out[eye] = {
                    str(ref.ReferencedSOPInstanceUID)
                    for c in content
                    if getattr(c, "ValueType", "") == "IMAGE"
                    for ref in c.ReferencedSOPSequence
                }
            walk(content)

    walk(ds.ContentSequence)
    return out


def capture_uid(services: Any, capture_id: int) -> str:
    row = services.store.one(
        "SELECT c.sop_instance_uid AS own, d.sop_instance_uid AS op FROM captures c "
        "LEFT JOIN derived_objects d ON d.capture_pk = c.id AND d.kind = 'op' WHERE c.id = ?",
        (capture_id,),
    )
    return str(row["op"] or row["own"])


def decision_events(services: Any) -> list[dict[str, Any]]:
    rows = services.store.query(
        "SELECT * FROM audit_events WHERE json_extract(detail, '$.stage') = 'eye_decision' "
        "ORDER BY seq"
    )
    return [{**row, "detail": json.loads(row["detail"])} for row in rows]


def settled(services: Any, count: int) -> Callable[[], bool]:
    """``count`` documents of each kind built and nothing due."""

    def check() -> bool:
        return (
            len(documents(services, "sr")) == count
            and len(documents(services, "pdf")) == count
            and not services.store.query("SELECT 1 FROM documents_due WHERE state = 'due'")
        )

    return check


@pytest.mark.parametrize(
    "send", [send_upload, send_hotfolder, send_dicom], ids=lambda f: f.__name__
)
def test_contradicted_label_counts_for_neither_eye_until_decided(
    screening: Any, send: Callable[[Any, Any, str], None]
) -> None:
    services = screening
    send(services, photo_rgb("R"), "R")
    send(services, photo_rgb("L"), "R")  # a left eye, labelled right
    rows = wait_for(
        lambda: (r := captures(services)) and len(r) == 2
        and all(x["status"] == "processed" for x in r) and r,
        SLOW,
    )  # fmt: skip
    good, wrong = (int(r["id"]) for r in rows)
    wait_for(lambda: CONFLICT in " ".join(outcome(services)["prompts"]), SLOW)

    # 1. in question: the right eye is graded by the right photo only; the left is unresolved
    found = outcome(services)
    assert eyes(found) == {"L": "unresolved", "R": "graded"}
    assert not found["complete"] and found["code"] != "rescreen"
    right = next(e for e in found["eyes"] if e["eye"] == "R")
    assert right["capture_ids"] == [good]
    assert documents(services, "sr") == []  # nothing to report on yet

    # 2. use the detected eye: complete, the photograph counts for the left eye
    decided = services.eye_labels.decide(wrong, "use_detected", user="op1", role="operator")
    assert decided.decision.eye == "L" and decided.outcome.complete
    found = outcome(services)
    assert eyes(found) == {"L": "graded", "R": "graded"}
    assert next(e for e in found["eyes"] if e["eye"] == "L")["capture_ids"] == [wrong]
    assert not any("label" in p for p in found["prompts"])
    wait_for(settled(services, 1), SLOW)
    # the SR files the photograph under the eye decided, whatever its header says
    filed = sr_eyes(services, documents(services, "sr")[-1])
    assert filed == {"R": {capture_uid(services, good)}, "L": {capture_uid(services, wrong)}}
    (event,) = decision_events(services)
    assert event["patient_id"] == PATIENT and event["user_id"] == "op1"
    assert event["detail"]["capture_id"] == wrong
    assert event["detail"]["action"] == "use_detected"
    assert (event["detail"]["label_given"], event["detail"]["eye_detected"]) == ("R", "L")

    # 3. keep the label after all: two right photos, the left eye missing; documents again
    services.eye_labels.decide(wrong, "keep_label", user="dr1", role="clinician")
    found = outcome(services)
    assert eyes(found) == {"L": "missing", "R": "graded"} and not found["complete"]
    right = next(e for e in found["eyes"] if e["eye"] == "R")
    assert right["capture_ids"] == [good, wrong]
    wait_for(settled(services, 2), SLOW)

    # 4. exclude it: it is in no eye and no document
    with pytest.raises(RejectedInput, match="reason"):
        services.eye_labels.decide(wrong, "exclude", user="op1", role="operator")
    services.eye_labels.decide(
        wrong, "exclude", reason="another patient's photo", user="op1", role="operator"
    )
    found = outcome(services)
    assert eyes(found) == {"L": "missing", "R": "graded"}
    assert all(wrong not in e["capture_ids"] for e in found["eyes"])
    wait_for(settled(services, 3), SLOW)
    sr, pdf = documents(services, "sr")[-1], documents(services, "pdf")[-1]
    assert len(json.loads(sr["references_json"])) == 1
    assert json.loads(pdf["references_json"]) == json.loads(sr["references_json"])
    actions = [e["detail"]["action"] for e in decision_events(services)]
    assert actions == ["use_detected", "keep_label", "exclude"]
    assert decision_events(services)[-1]["detail"]["reason"] == "another patient's photo"
    assert services.audit.verify().ok
