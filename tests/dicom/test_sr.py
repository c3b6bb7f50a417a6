"""Screening result SR: content tree per eye, verification re-issue, dciodvfy and dsrdump."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset

from appliance.dicom.op import new_uid, to_bytes
from appliance.dicom.sr import device_observer_uid, screening_sr
from tests.conftest import fundus, op_bytes, require_tool

COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"
DEVICE = {
    "name": "screener-01",
    "manufacturer": "Demonstration",
    "model": "RS-1",
    "serial": "SN0001",
    "uid": "2.25.1234567890",
}
MODELS = [
    {
        "name": "retina-dr-demo",
        "version": "0.1.0",
        "variant": "int8",
        "sha256": "ab" * 32,
        "provider": "CPUExecutionProvider",
    }
]
FINDINGS: dict[str, dict[str, Any]] = {
    "R": {
        "dr_grade": 2,
        "referable": True,
        "dme": False,
        "cdr": 0.42,
        "gradable": True,
        "glaucoma_suspect": False,
    },
    "L": {
        "dr_grade": 0,
        "referable": False,
        "dme": None,
        "cdr": 0.3,
        "gradable": True,
        "glaucoma_suspect": None,
    },
}


@pytest.fixture(scope="module")
def images() -> list[Dataset]:
    study = new_uid()
    return [
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


def _build(images: list[Dataset], **kwargs: Any) -> Dataset:
    return screening_sr(
        images=images,
        findings_by_eye=FINDINGS,
        models=MODELS,
        device=kwargs.pop("device", DEVICE),
        series_instance_uid=kwargs.pop("series_instance_uid", new_uid()),
        sop_instance_uid=new_uid(),
        uid_root="2.25.",
        **kwargs,
    )


def _round_trip(ds: Dataset) -> Dataset:
    return pydicom.dcmread(io.BytesIO(to_bytes(ds)))


def _code(item: Dataset) -> tuple[str, str]:
    concept = item.ConceptNameCodeSequence[0]
    return concept.CodeValue, concept.CodingSchemeDesignator


def _groups(ds: Dataset) -> list[Dataset]:
    measurements = [i for i in ds.ContentSequence if _code(i) == ("126010", "DCM")][0]
    return list(measurements.ContentSequence)


def _answers(group: Dataset) -> dict[tuple[str, str], Any]:
    out: dict[tuple[str, str], Any] = {}
    for item in group.ContentSequence:
        if item.ValueType == "CODE":
            out[_code(item)] = item.ConceptCodeSequence[0].CodeValue
        elif item.ValueType == "NUM":
            out[_code(item)] = float(item.MeasuredValueSequence[0].NumericValue)
    return out


def _laterality(group: Dataset) -> str:
    site = [i for i in group.ContentSequence if _code(i) == ("363698007", "SCT")][0]
    return str(site.ContentSequence[0].ConceptCodeSequence[0].CodeValue)


def _run(tool: str, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_tool(tool), str(path)], capture_output=True, text=True, timeout=60
    )


def test_content_tree_per_eye(images: list[Dataset]) -> None:
    ds = _round_trip(_build(images))
    assert ds.SOPClassUID == COMPREHENSIVE_3D_SR and ds.Modality == "SR"
    assert ds.VerificationFlag == "UNVERIFIED" and "PredecessorDocumentsSequence" not in ds
    assert ds.PatientID == images[0].PatientID
    assert ds.StudyInstanceUID == images[0].StudyInstanceUID
    assert ds.ContentSequence is not None
    assert ds.ConceptNameCodeSequence[0].CodeValue == "126000"
    assert ds.CodingSchemeIdentificationSequence[0].CodingSchemeDesignator == "99RETSCR"
    equipment = {
        e.get("ManufacturerModelName"): e.get("SoftwareVersions")
        for e in ds.ContributingEquipmentSequence
    }
    assert equipment["retina-dr-demo"] == "0.1.0"  # IHE AIR: model name and version

    right, left = _groups(ds)
    assert _laterality(right) == "24028007" and _laterality(left) == "7771000"
    r, l_ = _answers(right), _answers(left)
    assert r[("71491-5", "LN")] == "LA18645-4"  # moderate NPDR
    assert r[("RS002", "99RETSCR")] == "373066001"  # referable: yes
    assert r[("RS003", "99RETSCR")] == "373067005"  # DME: no
    assert r[("RS004", "99RETSCR")] == "RS006"  # gradable
    assert r[("71485-7", "LN")] == pytest.approx(0.42)
    assert l_[("71490-7", "LN")] == "LA18643-9"
    assert ("RS003", "99RETSCR") not in l_  # None is left out, not written as "No"
    assert l_[("RS008", "99RETSCR")] == pytest.approx(0.3)

    for group, image in ((right, images[0]), (left, images[1])):
        refs = [i for i in group.ContentSequence if i.ValueType == "IMAGE"]
        assert [i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for i in refs] == [
            image.SOPInstanceUID
        ]
    evidence = ds.CurrentRequestedProcedureEvidenceSequence[0]
    referenced = {
        i.ReferencedSOPInstanceUID
        for s in evidence.ReferencedSeriesSequence
        for i in s.ReferencedSOPSequence
    }
    assert referenced == {i.SOPInstanceUID for i in images}


def test_verified_reissue_references_predecessor(images: list[Dataset]) -> None:
    first = _build(images)
    signed = _round_trip(
        _build(
            images,
            series_instance_uid=first.SeriesInstanceUID,
            verified_by="Grader^Jane",
            predecessor=first,
        )
    )
    assert signed.VerificationFlag == "VERIFIED"
    assert signed.VerifyingObserverSequence[0].VerifyingObserverName == "Grader^Jane"
    predecessor = signed.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0]
    assert predecessor.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == first.SOPInstanceUID
    assert signed.SOPInstanceUID != first.SOPInstanceUID


def test_rejects_bad_input(images: list[Dataset]) -> None:
    for findings, message in (({"R": {"dr_grade": 7}}, "dr_grade"), ({"X": {}}, "'R' or 'L'")):
        with pytest.raises(ValueError, match=message):
            screening_sr(
                images=images,
                findings_by_eye=findings,
                models=MODELS,
                device=DEVICE,
                series_instance_uid=new_uid(),
                sop_instance_uid=new_uid(),
                uid_root="2.25.",
            )
    with pytest.raises(ValueError, match="predecessor"):
        _build(images, predecessor=_build(images))


def test_sr_passes_dciodvfy_and_dsrdump(images: list[Dataset], tmp_path: Path) -> None:
    first = _build(images)
    signed = _build(images, verified_by="Grader^Jane", predecessor=first)
    for name, ds in (("preliminary", first), ("verified", signed)):
        path = tmp_path / f"{name}.dcm"
        path.write_bytes(to_bytes(ds))
        run = _run("dciodvfy", path)
        output = run.stdout + run.stderr
        assert "Comprehensive3DSR" in output
        assert [line for line in output.splitlines() if line.startswith("Error")] == [], output
        dump = _run("dsrdump", path)
        assert dump.returncode == 0, dump.stderr
        assert "Imaging Measurement Report" in dump.stdout
        assert '"Right eye DR severity level"' in dump.stdout
        assert ("VERIFIED" if name == "verified" else "UNVERIFIED") in dump.stdout


def test_the_worklist_request_is_referenced(images: list[Dataset], tmp_path: Path) -> None:
    for ds in images:
        request = Dataset()
        request.AccessionNumber = "ACC-77"
        request.RequestedProcedureID = "RP7"
        request.ScheduledProcedureStepID = "SPS7"
        ds.AccessionNumber = "ACC-77"
        ds.RequestAttributesSequence = [request]
    sr = _build(images)
    [item] = sr.ReferencedRequestSequence
    assert item.StudyInstanceUID == images[0].StudyInstanceUID
    assert (item.AccessionNumber, item.RequestedProcedureID) == ("ACC-77", "RP7")
    assert sr.AccessionNumber == "ACC-77"
    path = tmp_path / "requested.dcm"
    path.write_bytes(to_bytes(sr))
    run = _run("dciodvfy", path)
    output = run.stdout + run.stderr
    assert [line for line in output.splitlines() if line.startswith("Error")] == [], output


def _device_observer(ds: Dataset) -> str:
    items = [i for i in ds.ContentSequence if _code(i) == ("121012", "DCM")]
    assert len(items) == 1
    return str(items[0].UID)


@pytest.mark.parametrize("root", ["2.25.", "1.2.826.0.1.3680043.10.1288."])
def test_the_device_observer_uid_is_derived_from_the_appliance(
    images: list[Dataset], root: str
) -> None:
    """The same device (manufacturer, model, serial) under the same root is the same observer
    in every SR it makes; another serial number, model or root is another observer."""
    uid = device_observer_uid(root, DEVICE)
    assert uid == device_observer_uid(root, {k: v for k, v in reversed(DEVICE.items())})
    assert uid.startswith(root) and len(uid) <= 64
    assert all(part.isdigit() and (part == "0" or part[0] != "0") for part in uid.split("."))
    others = {
        device_observer_uid(root, {**DEVICE, "serial": "SN0002"}),
        device_observer_uid(root, {**DEVICE, "model": "RS-2"}),
        device_observer_uid("1.2.826.0.1.3680043.10.1289.", DEVICE),
    }
    assert uid not in others and len(others) == 3
    first, second = (
        _round_trip(_build(images, device={**DEVICE, "uid": device_observer_uid(root, DEVICE)}))
        for _ in range(2)
    )
    assert first.SOPInstanceUID != second.SOPInstanceUID
    assert _device_observer(first) == _device_observer(second) == uid
