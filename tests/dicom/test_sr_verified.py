"""The VERIFIED re-issue of the screening SR: clinician values, review evaluations, validators."""

from __future__ import annotations

import io
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset

from appliance.dicom.op import new_uid, to_bytes
from appliance.dicom.sr import screening_sr
from tests.conftest import fundus, op_bytes, require_tool
from tests.dicom.test_sr import DEVICE, FINDINGS, MODELS

SIGNED_AT = datetime(2025, 3, 4, 10, 20, 30, 123456, tzinfo=UTC)


@pytest.fixture(scope="module")
def images() -> list[Dataset]:
    study = new_uid()
    return [
        pydicom.dcmread(
            io.BytesIO(
                op_bytes(
                    fundus(seed=9, size=(240, 320), eye=eye),
                    laterality=eye,
                    study_instance_uid=study,
                )
            )
        )
        for eye in ("R", "L")
    ]


def _sr(images: list[Dataset], findings: dict[str, Any] = FINDINGS, **kwargs: Any) -> Dataset:
    ds = screening_sr(
        images=images,
        findings_by_eye=findings,
        models=MODELS,
        device=DEVICE,
        series_instance_uid=new_uid(),
        sop_instance_uid=new_uid(),
        uid_root="2.25.",
        **kwargs,
    )
    return pydicom.dcmread(io.BytesIO(to_bytes(ds)))


def _signed(images: list[Dataset], **kwargs: Any) -> Dataset:
    overridden = {eye: dict(values) for eye, values in FINDINGS.items()}
    overridden["L"].update(dr_grade=4, referable=True, overridden=True)
    options: dict[str, Any] = {
        "outcome": "refer",
        "verified_by": "clinician1^",
        "verified_at": SIGNED_AT,
        "decision": "override",
        "comment": "New vessels elsewhere, left eye",
        "verifying_organization": "Retinal screening, station S1",
        **kwargs,
    }
    return _sr(images, overridden, **options)


def _named(items: Any, code: str) -> list[Dataset]:
    return [i for i in items if i.ConceptNameCodeSequence[0].CodeValue == code]


def _groups(ds: Dataset) -> list[Dataset]:
    return list(_named(ds.ContentSequence, "126010")[0].ContentSequence)


def _evaluations(ds: Dataset) -> dict[str, str]:
    container = _named(ds.ContentSequence, "C0034375")[0]
    return {
        i.ConceptNameCodeSequence[0].CodeValue: (
            i.ConceptCodeSequence[0].CodeValue if i.ValueType == "CODE" else i.TextValue
        )
        for i in container.ContentSequence
    }


def test_the_preliminary_sr_carries_the_automated_outcome(images: list[Dataset]) -> None:
    ds = _sr(images, outcome="rescreen")
    assert ds.VerificationFlag == "UNVERIFIED" and ds.PreliminaryFlag == "PRELIMINARY"
    assert _evaluations(ds) == {"RS010": "RS012"}  # screening outcome: rescreen
    assert not _named(ds.ContentSequence, "121006")  # no person observer before sign-off
    assert "C0034375" not in {
        i.ConceptNameCodeSequence[0].CodeValue for i in _sr(images).ContentSequence
    }  # no outcome given: no container


def test_the_verified_sr_carries_the_clinicians_values(images: list[Dataset]) -> None:
    first = _sr(images, outcome="rescreen")
    ds = _signed(images, predecessor=first)
    assert ds.VerificationFlag == "VERIFIED" and ds.PreliminaryFlag == "FINAL"
    observer = ds.VerifyingObserverSequence[0]
    assert observer.VerifyingObserverName.family_name == "clinician1"
    assert observer.VerificationDateTime == "20250304102030.123456+0000"
    assert observer.VerifyingOrganization == "Retinal screening, station S1"
    person = _named(ds.ContentSequence, "121008")  # Person Observer Name
    assert [str(p.PersonName) for p in person] == ["clinician1^"]

    right, left = _groups(ds)
    assert _named(right.ContentSequence, "111001")  # the model's grade: Algorithm Name kept
    assert not _named(left.ContentSequence, "111001")  # the clinician's grade: no algorithm
    tracking = _named(left.ContentSequence, "112039")[0].TextValue
    assert tracking == "Retinal screening, left eye, DR grade set by clinician"
    severity = _named(left.ContentSequence, "71490-7")[0]
    assert severity.ConceptCodeSequence[0].CodeValue == "LA18648-8"  # proliferative
    assert _named(left.ContentSequence, "RS002")[0].ConceptCodeSequence[0].CodeValue == (
        "373066001"
    )  # referable: yes
    assert _evaluations(ds) == {
        "RS010": "RS011",  # outcome: refer
        "RS015": "RS017",  # clinician review: overridden
        "121106": "New vessels elsewhere, left eye",
    }
    referenced = ds.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0]
    assert referenced.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == first.SOPInstanceUID


def test_an_amendment_names_every_document_it_replaces(images: list[Dataset]) -> None:
    first = _sr(images, outcome="rescreen")
    signed = _signed(images, predecessor=first)
    amended = _signed(images, predecessor=[signed, first], decision="accept", comment="")
    uids = {
        ref.ReferencedSOPInstanceUID
        for study in amended.PredecessorDocumentsSequence
        for series in study.ReferencedSeriesSequence
        for ref in series.ReferencedSOPSequence
    }
    assert uids == {first.SOPInstanceUID, signed.SOPInstanceUID}
    assert _evaluations(amended) == {"RS010": "RS011", "RS015": "RS016"}


def test_review_details_belong_to_a_verified_document_only(images: list[Dataset]) -> None:
    for kwargs, message in (
        ({"decision": "accept"}, "verified re-issue"),
        ({"comment": "x"}, "verified re-issue"),
        ({"outcome": "maybe"}, "outcome must be one of"),
        ({"verified_by": "a^", "decision": "perhaps"}, "'accept' or 'override'"),
    ):
        with pytest.raises(ValueError, match=message):
            _sr(images, **kwargs)


@pytest.mark.parametrize("with_predecessor", [True, False])
def test_verified_sr_passes_dciodvfy_and_dsrdump(
    images: list[Dataset], tmp_path: Path, with_predecessor: bool
) -> None:
    predecessor = _sr(images, outcome="rescreen") if with_predecessor else None
    path = tmp_path / "verified.dcm"
    path.write_bytes(to_bytes(_signed(images, predecessor=predecessor)))
    run = subprocess.run([require_tool("dciodvfy"), str(path)], capture_output=True, text=True)
    output = run.stdout + run.stderr
    assert "Comprehensive3DSR" in output
    assert [line for line in output.splitlines() if line.startswith("Error")] == [], output
    dump = subprocess.run([require_tool("dsrdump"), str(path)], capture_output=True, text=True)
    assert dump.returncode == 0, dump.stderr
    assert "VERIFIED" in dump.stdout and '"Screening outcome"' in dump.stdout
    assert '"Person Observer Name")="clinician1^"' in dump.stdout
    assert ("Predecessor Docs" in dump.stdout) is with_predecessor
