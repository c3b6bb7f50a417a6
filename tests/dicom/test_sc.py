"""Heatmap Secondary Capture: identity from the source, references, exact pixels, dciodvfy."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from appliance.dicom.op import OP_8BIT, OPParameters, new_uid, op_from_jpeg, to_bytes
from appliance.dicom.sc import DERIVATION, SECONDARY_CAPTURE, SERIES_DESCRIPTION, heatmap_sc
from appliance.domain import PatientInfo
from tests.conftest import fundus, jpeg_bytes, require_tool

ROOT = "1.2.826.0.1.3680043.8.498."  # pydicom's root: a configured uid_root
STEP = {
    "RequestedProcedureID": "RP1",
    "AccessionNumber": "ACC42",
    "ScheduledProcedureStepID": "SPS1",
}


@pytest.fixture(scope="module")
def source() -> Dataset:
    """An OP photograph taken for a worklist step (identity and request to copy)."""
    params = OPParameters(
        laterality="L",
        patient=PatientInfo(
            patient_id="PAT007",
            patient_name="Zo\u00eb^Test",
            birth_date="19510203",
            sex="F",
            issuer="HOSP",
        ),
        study_instance_uid=new_uid(),
        series_instance_uid=new_uid(),
        sop_instance_uid=new_uid(),
        accession_number="ACC42",
        field="macula",
        request_attributes=[STEP],
    )
    data = to_bytes(op_from_jpeg(jpeg_bytes(fundus(seed=4, size=(240, 320))), params))
    return pydicom.dcmread(io.BytesIO(data))


def _heatmap() -> np.ndarray:
    rng = np.random.default_rng(11)
    return rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)  # not square: rows ≠ columns


def _dciodvfy(data: bytes, tmp_path: Path) -> str:
    path = tmp_path / "heatmap.dcm"
    path.write_bytes(data)
    run = subprocess.run(
        [require_tool("dciodvfy"), str(path)], capture_output=True, text=True, timeout=60
    )
    return run.stdout + run.stderr


def test_heatmap_sc_round_trip_pixels_identity_and_dciodvfy(
    source: Dataset, tmp_path: Path
) -> None:
    rgb = _heatmap()
    series, uid = new_uid(ROOT), new_uid(ROOT)
    ds = heatmap_sc(rgb, source=source, series_instance_uid=series, sop_instance_uid=uid)
    data = to_bytes(ds)
    back = pydicom.dcmread(io.BytesIO(data))

    assert back.SOPClassUID == SECONDARY_CAPTURE and back.SOPInstanceUID == uid
    assert uid.startswith(ROOT) and series.startswith(ROOT)
    assert back.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert (back.Rows, back.Columns, back.SamplesPerPixel) == (96, 128, 3)
    assert back.PhotometricInterpretation == "RGB" and back.BitsAllocated == 8
    assert np.array_equal(back.pixel_array, rgb)  # the PNG's pixels, exactly
    # same patient and study as the photograph, its own series
    for keyword in (
        "PatientName",
        "PatientID",
        "IssuerOfPatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyInstanceUID",
        "StudyDate",
        "AccessionNumber",
    ):
        assert back[keyword].value == source[keyword].value, keyword
    assert back.RequestAttributesSequence[0].ScheduledProcedureStepID == "SPS1"
    assert back.SeriesInstanceUID == series != source.SeriesInstanceUID
    assert back.SeriesDescription == SERIES_DESCRIPTION and back.Modality == "OT"
    # what it is and where it came from
    assert back.ImageLaterality == "L"  # from the source when not given
    assert back.ConversionType == "WSD" and back.BurnedInAnnotation == "NO"
    assert back.DerivationDescription == DERIVATION and "not for diagnosis" in DERIVATION
    assert "demonstration" in DERIVATION
    assert list(back.ImageType)[:2] == ["DERIVED", "SECONDARY"]
    (ref,) = back.SourceImageSequence
    assert ref.ReferencedSOPClassUID == OP_8BIT
    assert ref.ReferencedSOPInstanceUID == source.SOPInstanceUID

    output = _dciodvfy(data, tmp_path)
    assert "SCImage" in output
    assert [line for line in output.splitlines() if line.startswith("Error")] == [], output


def test_laterality_given_wins_and_an_unknown_eye_is_not_guessed(
    source: Dataset, tmp_path: Path
) -> None:
    rgb = _heatmap()
    right = heatmap_sc(
        rgb, source=source, series_instance_uid=new_uid(), sop_instance_uid=new_uid(),
        laterality="R", instance_number=3,
    )  # fmt: skip
    assert right.ImageLaterality == "R" and right.InstanceNumber == 3
    unknown_source = Dataset()
    for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "PatientID"):
        unknown_source[keyword] = source[keyword]
    unknown = heatmap_sc(
        rgb, source=unknown_source, series_instance_uid=new_uid(), sop_instance_uid=new_uid()
    )
    assert "ImageLaterality" not in unknown and not unknown.Laterality  # no guess
    assert "PatientName" in unknown and not unknown.PatientName  # Type 2: present, empty
    assert unknown.PatientID == source.PatientID
    output = _dciodvfy(to_bytes(unknown), tmp_path)
    assert [line for line in output.splitlines() if line.startswith("Error")] == [], output


def test_heatmap_sc_refuses_what_it_cannot_encode(source: Dataset) -> None:
    uids = {"series_instance_uid": new_uid(), "sop_instance_uid": new_uid()}
    with pytest.raises(ValueError, match="H×W×3 uint8 RGB"):
        heatmap_sc(np.zeros((8, 8), np.uint8), source=source, **uids)
    with pytest.raises(ValueError, match="H×W×3 uint8 RGB"):
        heatmap_sc(np.zeros((8, 8, 3), np.float32), source=source, **uids)
    with pytest.raises(ValueError, match="the source image has no SOPClassUID"):
        heatmap_sc(_heatmap(), source=Dataset(), **uids)
    with pytest.raises(ValueError, match="laterality"):
        heatmap_sc(_heatmap(), source=source, laterality="B", **uids)
