"""The worklist step in OP objects: Accession Number and Request Attributes Sequence."""

from __future__ import annotations

import dataclasses
import io
import subprocess
from pathlib import Path

import pydicom
import pytest

from appliance.dicom.op import (
    OPParameters,
    new_uid,
    op_from_jpeg,
    request_attributes_sequence,
    to_bytes,
)
from appliance.domain import PatientInfo
from tests.conftest import fundus, jpeg_bytes, require_tool

STEP = {
    "RequestedProcedureID": "RP1",
    "ScheduledProcedureStepID": "SPS1",
    "AccessionNumber": "ACC1",
    "ScheduledProcedureStepDescription": "Diabetic eye screening",
}


def _op(**changes: object) -> bytes:
    params = OPParameters(
        laterality="L",
        patient=PatientInfo(patient_id="P1", patient_name="Doe^Jane", issuer="CLINIC"),
        study_instance_uid=new_uid(),
        series_instance_uid=new_uid(),
        sop_instance_uid=new_uid(),
        accession_number="ACC1",
        request_attributes=(STEP,),
        field="disc",
    )
    params = dataclasses.replace(params, **changes)  # type: ignore[arg-type]
    return to_bytes(op_from_jpeg(jpeg_bytes(fundus(seed=5, size=(480, 640))), params))


def test_the_step_is_copied_and_passes_dciodvfy(tmp_path: Path) -> None:
    data = _op()
    ds = pydicom.dcmread(io.BytesIO(data))
    assert ds.AccessionNumber == "ACC1" and ds.IssuerOfPatientID == "CLINIC"
    [item] = ds.RequestAttributesSequence
    assert {keyword: str(item.get(keyword)) for keyword in STEP} == STEP
    path = tmp_path / "op.dcm"
    path.write_bytes(data)
    run = subprocess.run([require_tool("dciodvfy"), str(path)], capture_output=True, text=True)
    output = run.stdout + run.stderr
    assert [line for line in output.splitlines() if line.startswith("Error")] == [], output


def test_without_a_step_there_is_no_sequence() -> None:
    ds = pydicom.dcmread(io.BytesIO(_op(accession_number="", request_attributes=())))
    assert "RequestAttributesSequence" not in ds and ds.AccessionNumber == ""


def test_items_are_checked() -> None:
    unscheduled = {"AccessionNumber": "ACC1", "RequestedProcedureID": " "}
    assert len(request_attributes_sequence([unscheduled])) == 0  # Type 1C: no step, no item
    with pytest.raises(ValueError, match="PatientID"):
        request_attributes_sequence([{**STEP, "PatientID": "x"}])
