"""Heatmap SC (optional): stored with the analysis, queued like the OP; off by default."""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pydicom
import pytest

from appliance.capture import Incoming
from appliance.config import Destination, Settings
from appliance.dicom.op import OPParameters, new_uid, op_from_jpeg, to_bytes
from appliance.dicom.sc import SECONDARY_CAPTURE, SERIES_DESCRIPTION
from appliance.domain import PatientInfo, Source
from tests.conftest import free_port, jpeg_bytes, require_tool

MODELS = Path(__file__).resolve().parents[2] / "models"
ROOT = "1.2.826.0.1.3680043.8.498."


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The shipped models, a UID root and one archive (nobody listens: jobs stay queued)."""
    archive = Destination(name="pacs", host="127.0.0.1", port=free_port(), ae_title="PACS")
    return settings.replace(models_dir=str(MODELS), destinations=(archive,), uid_root=ROOT)


def _photo(eye: str) -> np.ndarray:
    from appliance.synth.case import render_case
    from appliance.synth.dataset import case_for

    case = next(
        c for c in (case_for(6160, i, (600, 800)) for i in range(200))
        if c.eye == eye and c.field == "macula" and c.defect is None
    )  # fmt: skip
    return render_case(case)


def _upload(services: Any, eye: str, patient: str) -> int:
    capture = services.ingestor.ingest(
        Incoming(
            data=jpeg_bytes(_photo(eye)),
            source=Source.UPLOAD,
            user_id="t",
            fields={"patient_id": patient, "patient_name": "Roe^Ann", "laterality": eye},
        )
    )
    return int(capture.id)


def _derived(services: Any, kind: str) -> list[dict[str, Any]]:
    return list(services.store.query("SELECT * FROM derived_objects WHERE kind = ?", (kind,)))


def _jobs(services: Any, kind: str) -> list[dict[str, Any]]:
    return list(services.store.query("SELECT * FROM outbox_jobs WHERE kind = ?", (kind,)))


def _heatmap_png(services: Any, capture_id: int) -> np.ndarray:
    payload = json.loads(
        services.store.one(
            "SELECT payload FROM results WHERE capture_pk = ? AND kind = 'screening'",
            (capture_id,),
        )["payload"]
    )
    png = np.frombuffer(services.blobs.read(payload["heatmap"]), np.uint8)
    return cv2.cvtColor(cv2.imdecode(png, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def test_heatmap_sc_is_off_by_default(settings: Settings) -> None:
    from appliance.runtime.services import Services

    assert settings.heatmap_secondary_capture is False
    services = Services(settings)
    services.start(dicom=False, hotfolder=False, worker=False)
    try:
        capture_id = _upload(services, "R", "SCOFF")
        services.pipeline.drain()
        assert _heatmap_png(services, capture_id).size  # a heatmap exists ...
        assert len(_derived(services, "op")) == 1 and len(_jobs(services, "op")) == 1
        assert _derived(services, "sc") == [] and _jobs(services, "sc") == []  # ... but no SC
    finally:
        services.stop()


def test_heatmap_sc_recorded_and_queued_for_each_photograph(settings: Settings) -> None:
    from appliance.runtime.services import Services

    services = Services(settings.replace(heatmap_secondary_capture=True))
    services.start(dicom=False, hotfolder=False, worker=False)
    try:
        ids = [_upload(services, eye, "SCON") for eye in ("L", "R")]
        services.pipeline.drain()
        ops = {row["capture_pk"]: row for row in _derived(services, "op")}
        scs = {row["capture_pk"]: row for row in _derived(services, "sc")}
        assert sorted(scs) == sorted(ops) == sorted(ids)
        assert len({row["series_instance_uid"] for row in scs.values()}) == 1  # one series
        for capture_id, eye, number in zip(ids, ("L", "R"), (1, 2), strict=True):
            row, op_row = scs[capture_id], ops[capture_id]
            assert row["visit_key"] == op_row["visit_key"]
            assert row["sop_class_uid"] == SECONDARY_CAPTURE
            assert row["sop_instance_uid"].startswith(ROOT)
            assert row["series_instance_uid"].startswith(ROOT)
            assert row["study_instance_uid"] == op_row["study_instance_uid"]
            assert json.loads(row["references_json"]) == [op_row["sop_instance_uid"]]
            ds = pydicom.dcmread(services.blobs.resolve(row["file_path"]))
            op = pydicom.dcmread(services.blobs.resolve(op_row["file_path"]))
            assert ds.SOPInstanceUID == row["sop_instance_uid"]
            assert (
                (ds.PatientID, ds.PatientName)
                == (op.PatientID, op.PatientName)
                == (
                    "SCON",
                    "Roe^Ann",
                )
            )
            assert ds.StudyInstanceUID == op.StudyInstanceUID
            assert ds.SeriesInstanceUID != op.SeriesInstanceUID
            assert ds.SeriesDescription == SERIES_DESCRIPTION and ds.InstanceNumber == number
            assert ds.ImageLaterality == eye == op.ImageLaterality
            assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == op.SOPInstanceUID
            assert np.array_equal(ds.pixel_array, _heatmap_png(services, capture_id))
        jobs = _jobs(services, "sc")
        assert sorted((j["sop_instance_uid"], j["destination"], j["state"]) for j in jobs) == (
            sorted((r["sop_instance_uid"], "pacs", "queued") for r in scs.values())
        )
        assert {j["file_path"] for j in jobs} == {r["file_path"] for r in scs.values()}
        run = subprocess.run(
            [require_tool("dciodvfy"), str(services.blobs.resolve(scs[ids[0]]["file_path"]))],
            capture_output=True,
            text=True,
            timeout=60,
        )
        output = run.stdout + run.stderr
        assert [line for line in output.splitlines() if line.startswith("Error")] == [], output
        assert services.audit.verify().ok
    finally:
        services.stop()


def test_heatmap_sc_of_a_photograph_the_camera_sent_as_dicom(settings: Settings) -> None:
    from appliance.runtime.services import Services

    study = new_uid()
    params = OPParameters(
        laterality="R",
        patient=PatientInfo(patient_id="SCCAM", patient_name="Cam^Era", birth_date="", sex=""),
        study_instance_uid=study,
        series_instance_uid=new_uid(),
        sop_instance_uid=new_uid(),
        field="macula",
    )
    data = to_bytes(op_from_jpeg(jpeg_bytes(_photo("R")), params))
    services = Services(settings.replace(heatmap_secondary_capture=True))
    services.start(dicom=False, hotfolder=False, worker=False)
    try:
        capture = services.ingestor.ingest(
            Incoming(data=data, source=Source.DICOM, user_id="ae:CAM", calling_ae="CAM")
        )
        services.pipeline.drain()
        (row,) = _derived(services, "sc")
        assert row["capture_pk"] == capture.id and row["study_instance_uid"] == study
        ds = pydicom.dcmread(io.BytesIO(services.blobs.read(row["file_path"])))
        assert ds.PatientID == "SCCAM" and ds.StudyInstanceUID == study
        assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == params.sop_instance_uid
        queued = {(j["kind"], j["sop_instance_uid"]) for j in services.store.query(
            "SELECT kind, sop_instance_uid FROM outbox_jobs")}  # fmt: skip
        assert queued == {
            ("received", params.sop_instance_uid),
            ("sc", row["sop_instance_uid"]),
        }
    finally:
        services.stop()
