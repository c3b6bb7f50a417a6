"""Issue #16 "done when", DICOM out: dcmtk's storescu sends an OPT volume and a fundus
photograph of the right eye to the running appliance; the SR (with the OCT measurements), the
Ophthalmic Thickness Map, the volume's Segmentation (retina, fluid) and the PDF report (with the
CST) reach a real Orthanc, and each one, fetched back from Orthanc, passes dciodvfy.

The installed dicom3tools (1.00~20220618) has no Ophthalmic Thickness Map IOD: for the map it
answers "Information Object Not found" and checks every attribute's VR, VM and encoding; that
is the one error accepted, and the IOD's modules are checked here (as
tests/dicom/test_thickness_map.py does)."""

from __future__ import annotations

import io
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest

from appliance.config import Destination, Settings
from appliance.dicom.oct_seg import SEGMENTATION, label_volume
from appliance.dicom.thickness_map import OPHTHALMIC_THICKNESS_MAP, decode_thickness
from appliance.pipeline.oct import layers, thickness_map, visit_scans
from appliance.synth.oct.dicom import OptHeader
from tests.conftest import op_bytes, require_tool, wait_for
from tests.dicom.test_thickness_map import REQUIRED, TYPE_2
from tests.orthanc_server import Orthanc
from tests.pipeline.test_heatmap_sc import MODELS, _photo
from tests.pipeline.test_oct_end_to_end import _send
from tests.pipeline.test_oct_pipeline import opt_bytes

pytestmark = pytest.mark.tool("Orthanc")

PATIENT = "OCT-ORTHANC-1"
STUDY = "1.2.826.0.1.3680043.8.498.16099"
NOT_FOUND = "Information Object Not found"
OCT_GROUP = "126010"  # DCM "Imaging Measurements" container of an OCT volume's group
CST = "57109-1"  # LOINC central subfield thickness


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[Orthanc]:
    with Orthanc(tmp_path / "orthanc") as server:
        yield server


def _dciodvfy_errors(data: bytes, path: Path) -> tuple[list[str], str]:
    path.write_bytes(data)
    run = subprocess.run(
        [require_tool("dciodvfy"), str(path)], capture_output=True, text=True, timeout=60
    )
    output = run.stdout + run.stderr
    return [line for line in output.splitlines() if line.startswith("Error")], output


def _oct_numbers(sr: pydicom.Dataset) -> list[dict[str, float]]:
    """Each OCT group's NUMs by concept code."""
    containers = [
        item
        for item in sr.ContentSequence
        if item.ConceptNameCodeSequence[0].CodeValue == OCT_GROUP
    ]
    return [
        {
            num.ConceptNameCodeSequence[0].CodeValue: float(
                num.MeasuredValueSequence[0].NumericValue
            )
            for group in container.ContentSequence
            for num in group.get("ContentSequence", [])
            if num.ValueType == "NUM"
        }
        for container in containers
    ]


def _delivered(services: Any) -> dict[str, dict[str, Any]] | None:
    kinds = {r["kind"]: r for r in services.store.query("SELECT * FROM derived_objects")}
    if not {"sr", "pdf", "opm", "seg"} <= set(kinds):
        return None
    pending = services.store.scalar("SELECT count(*) FROM outbox_jobs WHERE state != 'delivered'")
    return kinds if pending == 0 else None


def test_storescu_oct_and_photograph_give_sr_map_segmentation_and_pdf_in_orthanc(
    orthanc: Orthanc, settings: Settings, tmp_path: Path
) -> None:
    from appliance.runtime.services import Services

    storescu, pdftotext = require_tool("storescu"), require_tool("pdftotext")
    configured = settings.replace(
        models_dir=str(MODELS),
        documents_quiet_seconds=5.0,  # one eye photographed: documents after the quiet period
        destinations=(
            Destination(name="pacs", host="127.0.0.1", port=orthanc.dicom_port, ae_title="ORTHANC"),
        ),
    )
    header = OptHeader(patient_id=PATIENT, patient_name="Roe^Ann", study_instance_uid=STUDY)
    oct_file, photo_file = tmp_path / "oct.dcm", tmp_path / "photo.dcm"
    oct_file.write_bytes(opt_bytes("R", header=header, encoding="uncompressed"))
    photo_file.write_bytes(
        op_bytes(_photo("R"), laterality="R", patient_id=PATIENT, study_instance_uid=STUDY)
    )
    services = Services(configured)
    services.start(hotfolder=False)
    try:
        _send(storescu, configured, oct_file, "OCTCAM")
        _send(storescu, configured, photo_file, "FUNDUSCAM", "-xy")
        kinds = wait_for(lambda: _delivered(services), timeout=180)
        # exactly once: one map for the one volume, one SR and one PDF for the visit
        made = services.store.query("SELECT kind FROM derived_objects")
        assert sorted(r["kind"] for r in made) == ["opm", "pdf", "seg", "sr"]
        [scan] = visit_scans(services.store, "1 = 1", ())
        assert scan.finding is not None and scan.finding.cst_um is not None
        stored_map = thickness_map(services.blobs, scan.record)
        assert stored_map is not None and scan.record.map_spacing_mm is not None
        assert kinds["opm"]["capture_pk"] == scan.capture_id
        assert json.loads(kinds["opm"]["references_json"]) == [scan.sop_instance_uid]
        in_orthanc = orthanc.sop_uids()
        assert {kinds[k]["sop_instance_uid"] for k in ("sr", "pdf", "opm", "seg")} <= in_orthanc
        assert scan.sop_instance_uid in in_orthanc  # the OPT, forwarded as received
        cst = scan.finding.cst_um

        # the SR: dciodvfy clean, the OCT group with the CST, the OPT among its evidence
        data = orthanc.file(kinds["sr"]["sop_instance_uid"])
        errors, output = _dciodvfy_errors(data, tmp_path / "sr.dcm")
        assert errors == [], output
        sr = pydicom.dcmread(io.BytesIO(data))
        [numbers] = _oct_numbers(sr)
        assert numbers[CST] == pytest.approx(cst, abs=0.001)
        evidence = {
            ref.ReferencedSOPInstanceUID
            for study in sr.CurrentRequestedProcedureEvidenceSequence
            for series in study.ReferencedSeriesSequence
            for ref in series.ReferencedSOPSequence
        }
        assert scan.sop_instance_uid in evidence and len(evidence) == 2

        # the thickness map: only the missing-IOD message, every module there, the stored map
        data = orthanc.file(kinds["opm"]["sop_instance_uid"])
        errors, output = _dciodvfy_errors(data, tmp_path / "map.dcm")
        assert errors and all(NOT_FOUND in e for e in errors), output
        opm = pydicom.dcmread(io.BytesIO(data))
        for module, keywords in REQUIRED.items():
            for keyword in keywords:
                assert keyword in opm, f"{module}: {keyword} missing"
                if keyword not in TYPE_2:
                    assert opm[keyword].value not in (None, "", []), f"{module}: {keyword} empty"
        assert opm.SOPClassUID == OPHTHALMIC_THICKNESS_MAP and opm.Modality == "OPM"
        assert opm.PatientID == PATIENT and opm.StudyInstanceUID == STUDY
        assert opm.Laterality == "R"
        assert (opm.Rows, opm.Columns) == stored_map.shape
        assert [float(v) for v in opm.PixelSpacing] == pytest.approx(scan.record.map_spacing_mm)
        back = decode_thickness(opm)
        assert np.array_equal(np.isfinite(back), np.isfinite(stored_map))
        both = np.isfinite(stored_map)
        assert np.max(np.abs(back[both] - stored_map[both])) <= 0.05 + 1e-6

        # the Segmentation: dciodvfy clean (no warning either); each frame on its OPT frame, in
        # the OPT's frame of reference; its segments the stored layers on the OPT's grid
        assert json.loads(kinds["seg"]["references_json"]) == [scan.sop_instance_uid]
        data = orthanc.file(kinds["seg"]["sop_instance_uid"])
        errors, output = _dciodvfy_errors(data, tmp_path / "seg.dcm")
        assert errors == [] and "Warning" not in output, output
        seg = pydicom.dcmread(io.BytesIO(data))
        opt = pydicom.dcmread(oct_file, stop_before_pixels=True)
        assert seg.SOPClassUID == SEGMENTATION and seg.Modality == "SEG"
        assert seg.PatientID == PATIENT and seg.StudyInstanceUID == STUDY
        assert seg.FrameOfReferenceUID == opt.FrameOfReferenceUID
        stored = layers(services.blobs, scan.record)
        assert stored is not None
        expected = label_volume(
            stored.ilm_px, stored.rpe_px, stored.fluid, row_factor=stored.row_factor,
            ascan_factor=stored.ascan_factor, frames=int(opt.NumberOfFrames),
            rows=int(opt.Rows), columns=int(opt.Columns),
        )  # fmt: skip
        pixels = seg.pixel_array.reshape(int(seg.NumberOfFrames), seg.Rows, seg.Columns)
        present = [(expected == n).any(axis=(1, 2)).sum() for n in (1, 2)]
        assert int(seg.NumberOfFrames) == sum(present) and present[0] > 0  # no fluid in this one
        for index, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
            number = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
            reference = item.DerivationImageSequence[0].SourceImageSequence[0]
            assert reference.ReferencedSOPInstanceUID == scan.sop_instance_uid
            frame = int(reference.ReferencedFrameNumber) - 1
            assert np.array_equal(pixels[index] > 0, expected[frame] == number)

        # the PDF: dciodvfy clean; its text states the CST
        data = orthanc.file(kinds["pdf"]["sop_instance_uid"])
        errors, output = _dciodvfy_errors(data, tmp_path / "pdf.dcm")
        assert errors == [], output
        report = tmp_path / "report.pdf"
        report.write_bytes(bytes(pydicom.dcmread(io.BytesIO(data)).EncapsulatedDocument))
        text = subprocess.run(
            [pdftotext, str(report), "-"], capture_output=True, text=True, timeout=60
        ).stdout
        assert f"Central subfield thickness (CST): {cst:.0f} \u00b5m" in text
    finally:
        services.stop()
