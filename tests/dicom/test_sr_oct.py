"""OCT measurements in the screening SR: values read back per eye with their codes and units,
the OPT as source image and evidence, an OCT-only visit, and dciodvfy / dsrdump."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset

from appliance.dicom.op import new_uid, to_bytes
from appliance.dicom.sr import screening_sr
from appliance.dicom.sr_oct import OctReport
from appliance.domain import ETDRS_SUBFIELDS, OctFinding
from tests.conftest import fundus, op_bytes, require_tool
from tests.dicom.oct_source import opt_header

DEVICE = {"name": "screener-01", "manufacturer": "Demonstration", "model": "RS-1", "uid": "2.25.9"}
MODELS = [{"name": "retina-dr-demo", "version": "0.1.0"}]
VALUES = (312.0, 345.5, 350.25, 340.0, 330.0, 300.0, 310.0, 295.0, 280.0)
SUBFIELDS = dict(zip(ETDRS_SUBFIELDS, VALUES, strict=True))
RIGHT = OctFinding(
    capture_id=11,
    laterality="R",
    gradable=True,
    cst_um=312.0,
    subfield_um={**SUBFIELDS, "central": None, "outer_temporal": None},  # not scanned
    macular_volume_mm3=8.612,
    p_fluid_centre=0.81,
    p_fluid_any=0.9,
    fluid_volume_mm3=0.031,
    signal_db=27.5,
)
LEFT = OctFinding(capture_id=12, laterality="L", gradable=False, quality_reasons=("blink",))
THICKNESS = {
    "57109-1": "central",
    "57110-9": "inner_superior",
    "57111-7": "inner_nasal",
    "57112-5": "inner_inferior",
    "57113-3": "inner_temporal",
    "57114-1": "outer_superior",
    "57115-8": "outer_nasal",
    "57116-6": "outer_inferior",
    "57117-4": "outer_temporal",
}


@pytest.fixture(scope="module")
def visit() -> dict[str, Any]:
    study = new_uid()
    photos = [
        pydicom.dcmread(
            io.BytesIO(
                op_bytes(
                    fundus(seed=5, size=(240, 320), eye=eye),
                    laterality=eye,
                    study_instance_uid=study,
                )
            )
        )
        for eye in ("R", "L")
    ]
    opts = {eye: opt_header(eye, study_instance_uid=study) for eye in ("R", "L")}
    return {"photos": photos, "opts": opts}


def _sr(images: list[Dataset], oct: list[OctReport], findings: dict[str, Any]) -> Dataset:
    ds = screening_sr(
        images=images,
        findings_by_eye=findings,
        models=MODELS,
        device=DEVICE,
        series_instance_uid=new_uid(),
        sop_instance_uid=new_uid(),
        uid_root="2.25.",
        oct=oct,
    )
    return pydicom.dcmread(io.BytesIO(to_bytes(ds)))


def _code(item: Dataset) -> str:
    return str(item.ConceptNameCodeSequence[0].CodeValue)


def _groups(ds: Dataset) -> list[Dataset]:
    [measurements] = [i for i in ds.ContentSequence if _code(i) == "126010"]
    return list(measurements.ContentSequence)


def _tracking(group: Dataset) -> str:
    return str([i for i in group.ContentSequence if _code(i) == "112039"][0].TextValue)


def _nums(group: Dataset) -> dict[str, tuple[float, str]]:
    return {
        _code(i): (
            float(i.MeasuredValueSequence[0].NumericValue),
            str(i.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0].CodeValue),
        )
        for i in group.ContentSequence
        if i.ValueType == "NUM"
    }


def _answers(group: Dataset) -> dict[str, str]:
    return {
        _code(i): str(i.ConceptCodeSequence[0].CodeValue)
        for i in group.ContentSequence
        if i.ValueType == "CODE" and _code(i) != "363698007"  # not the finding site
    }


def _source(group: Dataset) -> str:
    [image] = [i for i in group.ContentSequence if i.ValueType == "IMAGE"]
    return str(image.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)


def test_oct_groups_read_back_per_eye(visit: dict[str, Any]) -> None:
    opts = visit["opts"]
    reports = [
        OctReport(finding=LEFT, source=opts["L"]),
        OctReport(finding=RIGHT, source=opts["R"], fluid_centre=True, algorithm_version="0.2"),
    ]
    findings = {"R": {"dr_grade": 1, "gradable": True}, "L": {"dr_grade": 0, "gradable": True}}
    ds = _sr(visit["photos"], reports, findings)
    groups = _groups(ds)
    assert [_tracking(g) for g in groups] == [
        "Retinal screening, right eye",
        "Macular OCT, right eye",
        "Retinal screening, left eye",
        "Macular OCT, left eye",
    ]
    right, left = groups[1], groups[3]
    nums = _nums(right)
    for code, name in THICKNESS.items():
        expected = RIGHT.cst_um if name == "central" else SUBFIELDS[name]
        if name == "outer_temporal":
            assert code not in nums  # not measured: left out, not written as 0
            continue
        assert nums[code] == (pytest.approx(expected), "um"), name
    assert nums["57118-2"] == (pytest.approx(8.612), "mm3")
    assert nums["RS019"] == (pytest.approx(0.81), "1")
    assert nums["RS020"] == (pytest.approx(0.9), "1")
    assert nums["RS021"] == (pytest.approx(0.031), "mm3")
    assert nums["RS022"] == (pytest.approx(27.5), "dB")
    assert _answers(right) == {"RS004": "RS006", "RS023": "373066001"}  # gradable; fluid: yes
    assert _source(right) == opts["R"].SOPInstanceUID
    assert _nums(left) == {} and _answers(left) == {"RS004": "RS007"}  # not gradable
    assert _source(left) == opts["L"].SOPInstanceUID
    site = [i for i in left.ContentSequence if _code(i) == "363698007"][0]
    assert site.ContentSequence[0].ConceptCodeSequence[0].CodeValue == "7771000"
    evidence = {
        i.ReferencedSOPInstanceUID
        for s in ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
        for i in s.ReferencedSOPSequence
    }
    assert {opts["R"].SOPInstanceUID, opts["L"].SOPInstanceUID} <= evidence


def test_an_oct_only_visit_and_a_report_without_its_eye(visit: dict[str, Any]) -> None:
    opt = visit["opts"]["R"]
    ds = _sr([], [OctReport(finding=RIGHT, source=opt)], {})
    assert ds.PatientID == opt.PatientID and ds.StudyInstanceUID == opt.StudyInstanceUID
    assert [_tracking(g) for g in _groups(ds)] == ["Macular OCT, right eye"]
    header = opt_header("R")
    del header.ImageLaterality
    nameless = OctFinding(capture_id=1, laterality=None, gradable=True)
    with pytest.raises(ValueError, match="eye"):
        _sr([], [OctReport(finding=nameless, source=header)], {})
    with pytest.raises(ValueError, match="source image"):
        _sr([], [], {})


def test_sr_with_oct_passes_dciodvfy_and_dsrdump(visit: dict[str, Any], tmp_path: Path) -> None:
    opts = visit["opts"]
    reports = [
        OctReport(finding=RIGHT, source=opts["R"], fluid_centre=False),
        OctReport(finding=LEFT, source=opts["L"]),
    ]
    ds = _sr(visit["photos"], reports, {"R": {"dr_grade": 2, "gradable": True}})
    path = tmp_path / "sr-oct.dcm"
    path.write_bytes(to_bytes(ds))
    run = subprocess.run(
        [require_tool("dciodvfy"), str(path)], capture_output=True, text=True, timeout=60
    )
    output = run.stdout + run.stderr
    assert "Comprehensive3DSR" in output
    assert [line for line in output.splitlines() if line.startswith("Error")] == [], output
    dump = subprocess.run(
        [require_tool("dsrdump"), str(path)], capture_output=True, text=True, timeout=60
    )
    assert dump.returncode == 0, dump.stderr
    assert '"Macular grid.center subfield thickness by OCT"' in dump.stdout
    assert '"Macular grid.total volume by OCT"' in dump.stdout
