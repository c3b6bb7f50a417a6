"""Identity given with a file: the worklist step's study, and the station's selection as a
fallback for hot-folder files that carry none. A DICOM header keeps its own identity."""

from __future__ import annotations

import json
from typing import Any

import pytest

from appliance.capture import Incoming
from appliance.capture.ingest import Identity, identity_from_fields, patient_from_fields
from appliance.domain import PatientInfo, Source
from appliance.errors import RejectedInput
from appliance.runtime.services import Services
from tests.conftest import fundus, jpeg_bytes, op_bytes

SMALL = (96, 128)
STUDY = "1.2.826.0.1.3680043.8.498.4242"
STEP = {"patient_id": "P9", "patient_name": "Roe^Ann", "accession_number": "ACC9",
        "study_instance_uid": STUDY}  # fmt: skip


def image(seed: int) -> bytes:
    return jpeg_bytes(fundus(seed=seed, size=SMALL))


def stored(services: Services, capture_id: int) -> dict[str, Any]:
    row = services.store.one(
        "SELECT c.source, p.patient_id, s.study_instance_uid, s.accession_number, s.study_date "
        "FROM captures c LEFT JOIN patients p ON p.id = c.patient_pk "
        "LEFT JOIN studies s ON s.id = c.study_pk WHERE c.id = ?",
        (capture_id,),
    )
    assert row is not None
    return row


def test_study_fields_are_checked() -> None:
    identity = identity_from_fields({**STEP, "laterality": "L"})
    assert identity == Identity(
        patient=PatientInfo(patient_id="P9", patient_name="Roe^Ann"),
        laterality="L",
        accession_number="ACC9",
        study_instance_uid=STUDY,
    )
    assert patient_from_fields(STEP) == (identity.patient, None)  # the older call still works
    refused = {
        "study_instance_uid must be a DICOM UID": {**STEP, "study_instance_uid": "1.02.3"},
        "accession_number is too long": {**STEP, "accession_number": "A" * 17},
        "needs the study_instance_uid": {"patient_id": "P9", "accession_number": "ACC9"},
        "patient_id is required": {"study_instance_uid": STUDY},
        "unknown identity field": {**STEP, "request_attributes": "[]"},
        "backslash": {**STEP, "accession_number": "A\\B"},
    }
    for message, fields in refused.items():
        with pytest.raises(RejectedInput, match=message):
            identity_from_fields(fields)


def test_a_given_study_creates_the_study_row(services: Services) -> None:
    capture = services.ingest_upload(image(1), STEP, user_id="t", address="")
    row = stored(services, capture.id)
    assert (row["patient_id"], row["study_instance_uid"], row["accession_number"]) == (
        "P9", STUDY, "ACC9",
    )  # fmt: skip
    assert len(row["study_date"]) == 8 and capture.study_instance_uid == STUDY
    second = services.ingest_upload(image(2), STEP, user_id="t", address="")
    assert services.store.scalar("SELECT count(*) FROM studies") == 1
    assert stored(services, second.id)["study_instance_uid"] == STUDY
    event = services.store.one(
        "SELECT study_instance_uid FROM audit_events WHERE event_id = '110107' "
        "AND detail LIKE ? ORDER BY seq DESC",
        (f'%"capture_id": {second.id}%',),
    )
    assert event == {"study_instance_uid": STUDY}


def test_a_study_of_another_patient_is_refused(services: Services) -> None:
    services.ingest_upload(image(1), STEP, user_id="t", address="")
    with pytest.raises(RejectedInput, match="belongs to another patient") as refused:
        services.ingest_upload(image(2), {**STEP, "patient_id": "P10"}, user_id="t", address="")
    assert refused.value.reason == "identity_conflict"
    assert services.store.scalar("SELECT count(*) FROM captures") == 1


def _ingest(services: Services, data: bytes, source: Source, fields: Any = None) -> int:
    return services.ingestor.ingest(
        Incoming(data=data, source=source, user_id="t", fields=fields)
    ).id


def test_only_hot_folder_files_without_identity_take_the_selection(services: Services) -> None:
    selection = {**STEP, "birth_date": "19700101"}
    services.ingestor.fallback_identity = lambda: selection
    bare = _ingest(services, image(1), Source.HOTFOLDER)
    assert stored(services, bare)["patient_id"] == "P9"
    assert stored(services, bare)["study_instance_uid"] == STUDY
    # a sidecar naming only the eye keeps its eye and takes the selection's identity
    eye_only = _ingest(services, image(2), Source.HOTFOLDER, {"laterality": "L"})
    row = services.store.one(
        "SELECT laterality, patient_pk FROM captures WHERE id = ?", (eye_only,)
    )
    assert row is not None and row["laterality"] == "L" and row["patient_pk"] is not None
    # a sidecar's own identity wins
    own = _ingest(services, image(3), Source.HOTFOLDER, {"patient_id": "SIDECAR"})
    assert stored(services, own)["patient_id"] == "SIDECAR"
    # a DICOM header keeps its identity, by any path
    header = _ingest(services, op_bytes(patient_id="HEADER"), Source.DICOM)
    assert stored(services, header)["patient_id"] == "HEADER"
    folder_dicom = _ingest(services, op_bytes(patient_id="HEADER2"), Source.HOTFOLDER)
    assert stored(services, folder_dicom)["patient_id"] == "HEADER2"
    # uploads never take it: they say who they are
    upload = _ingest(services, image(4), Source.UPLOAD)
    assert stored(services, upload)["patient_id"] is None
    marked = [
        json.loads(r["detail"]).get("identity")
        for r in services.store.query(
            "SELECT detail FROM audit_events WHERE event_id IN ('110107', '110104') ORDER BY seq"
        )
    ]
    assert marked.count("station_selection") == 2


def test_a_broken_selection_never_fails_an_ingest(services: Services) -> None:
    def broken() -> dict[str, str]:
        raise RuntimeError("database gone")

    services.ingestor.fallback_identity = broken
    assert stored(services, _ingest(services, image(1), Source.HOTFOLDER))["patient_id"] is None
    services.ingestor.fallback_identity = lambda: {"patient_id": "", "sex": "nonsense"}
    assert stored(services, _ingest(services, image(2), Source.HOTFOLDER))["patient_id"] is None
