"""End to end: dcmtk's storescu, as the OCT camera and the fundus camera, sends an OPT volume
and a photograph of the same eye to the running appliance; the stored OctFinding and the
photograph's finding make one visit outcome."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from appliance.config import Settings
from appliance.synth.oct.dicom import OptHeader
from appliance.visits import ImageRecord
from tests.conftest import op_bytes, require_tool, wait_for
from tests.pipeline.test_heatmap_sc import MODELS, _photo
from tests.pipeline.test_oct_pipeline import opt_bytes

CI_DME = "Centre-involving diabetic macular oedema on OCT — refer to an eye care professional"
PATIENT = "OCT-E2E-1"
STUDY = "1.2.826.0.1.3680043.8.498.16016"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.replace(models_dir=str(MODELS))


def _send(storescu: str, settings: Settings, path: Path, aet: str, *options: str) -> None:
    sent = subprocess.run(
        [storescu, *options, "-aet", aet, "-aec", settings.dicom_ae_title,
         "127.0.0.1", str(settings.dicom_port), str(path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert sent.returncode == 0, sent.stdout + sent.stderr


def test_storescu_oct_and_photograph_make_one_outcome(
    settings: Settings, services: Any, tmp_path: Path
) -> None:
    storescu = require_tool("storescu")
    header = OptHeader(patient_id=PATIENT, patient_name="Roe^Ann", study_instance_uid=STUDY)
    oct_file = tmp_path / "oct.dcm"
    oct_file.write_bytes(
        opt_bytes("R", thickening_um=120.0, header=header, encoding="uncompressed")
    )
    photo_file = tmp_path / "photo.dcm"
    photo_file.write_bytes(
        op_bytes(_photo("R"), laterality="R", patient_id=PATIENT, study_instance_uid=STUDY)
    )
    _send(storescu, settings, oct_file, "OCTCAM")
    _send(storescu, settings, photo_file, "FUNDUSCAM", "-xy")
    rows = wait_for(
        lambda: (
            rows
            if len(
                rows := services.store.query(
                    "SELECT c.id, c.sop_class_uid, r.payload FROM captures c "
                    "JOIN results r ON r.capture_pk = c.id ORDER BY c.id"
                )
            )
            == 2
            else None
        ),
        timeout=120,
    )
    oct_row = next(r for r in rows if r["sop_class_uid"].endswith("77.1.5.4"))
    photo_row = next(r for r in rows if r is not oct_row)
    scan = ImageRecord.parse(oct_row["payload"]).oct
    assert scan is not None and scan.finding is not None
    assert scan.finding["gradable"] and scan.finding["cst_um"] > 330
    outcome = wait_for(
        lambda: services.store.one(
            "SELECT code, payload FROM visit_outcomes WHERE visit_key = "
            "(SELECT 'study:' || study_pk FROM captures WHERE id = ?) "
            "ORDER BY id DESC LIMIT 1",
            (photo_row["id"],),
        ),
        timeout=60,
    )
    decided = json.loads(outcome["payload"])
    right = next(e for e in decided["eyes"] if e["eye"] == "R")
    assert outcome["code"] == "refer" and decided["text"] == CI_DME
    assert right["capture_ids"] == [photo_row["id"]]  # the photograph completes the eye
    assert right["oct_capture_ids"] == [oct_row["id"]]
    assert right["oct_dme"] is True and right["dme"] is True and right["cst_um"] > 330
    assert right["status"] == "graded"


@pytest.mark.parametrize(
    ("encoding", "option"), [("jpeg", "-xy"), ("jpegls", "-xt"), ("j2k", "-xv")]
)
def test_storescu_sends_compressed_volumes_that_are_kept_and_measured(
    settings: Settings, services: Any, tmp_path: Path, encoding: str, option: str
) -> None:
    import io

    import pydicom

    from appliance.synth.oct.dicom import ENCODINGS

    storescu = require_tool("storescu")
    path = tmp_path / f"oct-{encoding}.dcm"
    path.write_bytes(opt_bytes("L", encoding=encoding))
    _send(storescu, settings, path, "OCTCAM", option)
    row = wait_for(
        lambda: services.store.one(
            "SELECT c.file_path, r.payload FROM captures c JOIN results r ON r.capture_pk = c.id"
        ),
        timeout=120,
    )
    stored = pydicom.dcmread(io.BytesIO(services.blobs.read(row["file_path"])))
    assert stored.file_meta.TransferSyntaxUID == ENCODINGS[encoding]  # kept as sent
    record = ImageRecord.parse(row["payload"])
    assert record.data["status"] == "measured" and record.gradable is True


def test_a_complete_visit_with_an_oct_gets_its_sr_pdf_and_thickness_map(services: Any) -> None:
    """A complete visit with an OCT: its SR and PDF (the OCT's group and section in them:
    tests/pipeline/test_oct_documents.py, tests/outbox/test_orthanc_oct.py) and the volume's
    thickness map and segmentation, each once, built without error."""
    from appliance.capture import Incoming
    from appliance.domain import Source
    from appliance.pipeline import due

    header = OptHeader(patient_id=PATIENT, patient_name="Roe^Ann", study_instance_uid=STUDY)
    sent = [opt_bytes("R", header=header)] + [
        op_bytes(_photo(eye), laterality=eye, patient_id=PATIENT, study_instance_uid=STUDY)
        for eye in ("R", "L")
    ]
    for data in sent:
        services.ingestor.ingest(
            Incoming(data=data, source=Source.DICOM, user_id="ae:CAM", calling_ae="CAM")
        )
    kinds = wait_for(
        lambda: (
            {r["kind"] for r in services.store.query("SELECT kind FROM derived_objects")}
            >= {"sr", "pdf", "opm", "seg"}
        ),
        timeout=120,
    )
    assert kinds
    made = services.store.query("SELECT kind FROM derived_objects WHERE kind != 'op'")
    assert sorted(r["kind"] for r in made) == ["opm", "pdf", "seg", "sr"]
    assert due.counts(services.store)["dead"] == 0
    outcome = services.store.one("SELECT payload FROM visit_outcomes ORDER BY id DESC LIMIT 1")
    right = next(e for e in json.loads(outcome["payload"])["eyes"] if e["eye"] == "R")
    assert right["oct_status"] == "graded" and right["oct_dme"] is False
