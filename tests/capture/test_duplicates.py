"""The same photograph for another patient is refused, never filed as the first patient's copy:
hot folder (to rejected/ with a reason), upload (HTTP 409; the other patient named only to a
role that may see them), DICOM (the same SOP Instance UID with another identity: the UID
conflict refusal). The same bytes for the same patient stay an idempotent "already received"."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pydicom
from pynetdicom import AE

from appliance.runtime.services import Services
from tests.conftest import API_TOKEN, fundus, jpeg_bytes, op_bytes, wait_for
from tests.web_helpers import csrf_from, logged_in

SOON = 10.0


def _image(seed: int) -> bytes:
    return jpeg_bytes(fundus(seed=seed, size=(96, 128)))


def _alerts(services: Services) -> list[dict[str, Any]]:
    rows = []
    for row in services.audit.rows():
        detail = json.loads(row["detail"])
        if detail.get("alert") == "duplicate_other_patient":
            rows.append({**row, "detail": detail})
    return rows


def _captures_of(services: Services, patient_id: str) -> int:
    return int(
        services.store.scalar(
            "SELECT count(*) FROM captures c JOIN patients p ON p.id = c.patient_pk "
            "WHERE p.patient_id = ?",
            (patient_id,),
        )
    )


def _drop(inbox: Path, name: str, data: bytes, patient_id: str) -> None:
    sidecar = {"patient_id": patient_id, "laterality": "R"}
    (inbox / f"{name}.json").write_text(json.dumps(sidecar), encoding="utf-8")
    (inbox / f"{name}.jpg").write_bytes(data)


def test_hotfolder_same_bytes_for_another_patient_are_rejected(services: Services) -> None:
    inbox = services.settings.inbox_path
    data = _image(21)
    _drop(inbox, "FIRST", data, "PAT-A")
    wait_for(lambda: list((inbox / "processed").rglob("FIRST.jpg")), SOON)
    _drop(inbox, "AGAIN", data, "PAT-A")  # the same patient: already received, taken
    wait_for(lambda: list((inbox / "processed").rglob("AGAIN.jpg")), SOON)
    _drop(inbox, "OTHER", data, "PAT-B")  # another patient: refused
    reason = wait_for(lambda: list((inbox / "rejected").rglob("OTHER.jpg.reason.txt")), SOON)[0]

    text = reason.read_text(encoding="utf-8")
    assert text.startswith("duplicate_other_patient: this photograph was already received for")
    assert "another patient" in text and "PAT-A" not in text  # no PHI on the camera's disk
    assert _captures_of(services, "PAT-A") == 1 and _captures_of(services, "PAT-B") == 0
    (alert,) = _alerts(services)
    assert alert["event_id"] == "110113" and alert["patient_id"] == "PAT-B"
    assert alert["detail"]["held_patient_id"] == "PAT-A"
    assert alert["detail"]["capture_id"] == services.store.scalar("SELECT id FROM captures")
    again = [
        json.loads(r["detail"])
        for r in services.audit.rows()
        if json.loads(r["detail"]).get("duplicate")
    ]
    assert len(again) == 1 and again[0]["visit"].startswith("patient:")
    # the service still answers: a new photograph is taken
    (inbox / "NEW.jpg").write_bytes(_image(22))
    wait_for(lambda: list((inbox / "processed").rglob("NEW.jpg")), SOON)
    assert services.audit.verify().ok


def _upload(client: Any, data: bytes, patient_id: str, headers: dict[str, str]) -> Any:
    return client.post(
        "/api/captures",
        data={"file": (io.BytesIO(data), "p.jpg"), "patient_id": patient_id, "laterality": "L"},
        headers={"Accept": "application/json", **headers},
        content_type="multipart/form-data",
    )


def test_upload_for_another_patient_is_409_naming_them_only_to_a_clinician(
    app: Any, services: Services
) -> None:
    token = {"Authorization": f"Bearer {API_TOKEN}"}
    data = _image(23)
    script = app.test_client()
    assert _upload(script, data, "PAT-A", token).status_code == 201

    same = _upload(script, data, "PAT-A", token)
    assert same.status_code == 200
    assert same.json["duplicate"] is True and same.json["patient_id"] == "PAT-A"
    assert "already received for patient PAT-A" in same.json["message"]

    other = _upload(script, data, "PAT-B", token)
    assert other.status_code == 409
    assert other.json["error"] == "duplicate_other_patient"
    assert "already received for another patient" in other.json["message"]
    assert "PAT-A" not in other.json["message"]

    operator = logged_in(app, services, "operator")
    page = operator.get("/station").get_data(as_text=True)
    seen = _upload(operator, data, "PAT-C", {"X-CSRFToken": csrf_from(page)})
    assert seen.status_code == 409 and "PAT-A" not in seen.json["message"]

    clinician = logged_in(app, services, "clinician")
    page = clinician.get("/station").get_data(as_text=True)
    named = _upload(clinician, data, "PAT-D", {"X-CSRFToken": csrf_from(page)})
    assert named.status_code == 409
    assert "another patient (Patient ID PAT-A)" in named.json["message"]

    assert [_captures_of(services, p) for p in ("PAT-A", "PAT-B", "PAT-C", "PAT-D")] == [1, 0, 0, 0]
    assert [a["detail"]["patient_id"] for a in _alerts(services)] == ["PAT-B", "PAT-C", "PAT-D"]
    assert _upload(script, _image(24), "PAT-B", token).status_code == 201  # still answers


def test_dicom_same_uid_with_another_identity_is_the_uid_conflict(services: Services) -> None:
    first = pydicom.dcmread(io.BytesIO(op_bytes(patient_id="PAT-A")))
    second = pydicom.dcmread(
        io.BytesIO(op_bytes(patient_id="PAT-B", sop_instance_uid=str(first.SOPInstanceUID)))
    )
    ae = AE(ae_title="CAMERA1")
    ae.add_requested_context(first.SOPClassUID, first.file_meta.TransferSyntaxUID)
    settings = services.settings
    assoc = ae.associate("127.0.0.1", settings.dicom_port, ae_title=settings.dicom_ae_title)
    assert assoc.is_established
    try:
        statuses = [int(assoc.send_c_store(ds).Status) for ds in (first, first, second)]
    finally:
        assoc.release()
    assert statuses[:2] == [0, 0] and statuses[2] != 0
    assert _captures_of(services, "PAT-A") == 1 and _captures_of(services, "PAT-B") == 0
    refused = [
        json.loads(r["detail"])
        for r in services.audit.rows()
        if json.loads(r["detail"]).get("refused") == "uid_conflict"
    ]
    assert len(refused) == 1 and _alerts(services) == []


def test_station_says_a_camera_folder_photo_was_another_patients(
    app: Any, services: Services
) -> None:
    from tests.web.test_station import fragment, walk_in

    inbox = services.settings.inbox_path
    data = _image(25)
    _drop(inbox, "HELD", data, "PAT-A")
    wait_for(lambda: list((inbox / "processed").rglob("HELD.jpg")), SOON)
    operator = logged_in(app, services, "operator")
    assert walk_in(operator, patient_id="PAT-W").status_code == 302
    (inbox / "CAMERA.jpg").write_bytes(data)  # no sidecar: the station's patient, PAT-W
    wait_for(lambda: list((inbox / "rejected").rglob("CAMERA.jpg.reason.txt")), SOON)

    shown = fragment(operator)
    assert "was not filed" in shown and "already received for another patient." in shown
    assert "PAT-A" not in shown
    clinician = logged_in(app, services, "clinician")
    assert "for another patient (Patient ID PAT-A)" in fragment(clinician)
    (alert,) = _alerts(services)
    assert alert["patient_id"] == "PAT-W" and alert["detail"]["held_patient_id"] == "PAT-A"
