"""The screening report PDF and its Encapsulated PDF wrapper: text, round trip, dciodvfy."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from appliance.dicom.op import new_uid, to_bytes
from appliance.dicom.pdf import (
    DEMONSTRATION,
    ENCAPSULATED_PDF,
    encapsulated_pdf,
    findings_in_words,
    report_pdf,
)
from tests.conftest import fundus, jpeg_bytes, op_bytes, png_bytes, require_tool

OUTCOME = {
    "code": "refer",
    "text": "More than mild diabetic retinopathy detected \u2014 refer to an eye care professional",
    "recall_months": None,
    "urgency": "routine",
    "prompts": ["Left eye: retake the photograph."],
}
MODELS = [{"name": "retina-dr-demo", "version": "0.1.0", "variant": "int8"}]


def _pdf(name: str = "Test^Patient", eyes: list[dict[str, Any]] | None = None) -> bytes:
    heat = np.zeros((120, 160, 3), np.uint8)
    heat[30:90, 50:110, 0] = 255
    default_eyes = [
        {
            "eye": "R",
            "photo_jpeg": jpeg_bytes(fundus(seed=2, size=(240, 320))),
            "heatmap_png": png_bytes(heat),
            "gradable": True,
            "findings": findings_in_words(dr_grade=2, dme=False, cdr=0.42),
        },
        {
            "eye": "L",
            "photo_jpeg": None,
            "heatmap_png": None,
            "gradable": False,
            "quality_reasons": ["The photograph is out of focus."],
            "guidance": ["Clean the lens, refocus and retake."],
            "findings": [],
        },
    ]
    return report_pdf(
        patient={"name": name, "id": "PAT001", "birth_date": "19600101", "sex": "F"},
        study_date="20261129",
        eyes=default_eyes if eyes is None else eyes,
        outcome=OUTCOME,
        models=MODELS,
        disclaimer="Supports, and does not replace, an eye examination.",
    )


def _text(pdf: bytes, tmp_path: Path) -> str:
    path = tmp_path / "report.pdf"
    path.write_bytes(pdf)
    run = subprocess.run(
        [require_tool("pdftotext"), "-layout", str(path), "-"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 0, run.stderr
    return " ".join(run.stdout.split())


@pytest.fixture(scope="module")
def images() -> list[Dataset]:
    study = new_uid()
    return [
        pydicom.dcmread(
            io.BytesIO(
                op_bytes(fundus(seed=6, size=(240, 320)), laterality=eye, study_instance_uid=study)
            )
        )
        for eye in ("R", "L")
    ]


def test_findings_in_plain_words() -> None:
    assert findings_in_words(dr_grade=2, dme=False, cdr=0.42) == [
        "Moderate non-proliferative diabetic retinopathy",
        "No macular oedema",
        "Cup-to-disc ratio 0.42",
    ]


def test_report_reads_as_expected(tmp_path: Path) -> None:
    pdf = _pdf()
    assert pdf.startswith(b"%PDF") and pdf == _pdf()  # invariant: same input, same bytes
    text = _text(pdf, tmp_path)  # compressed pages: the text as a reader extracts it
    assert text.count(DEMONSTRATION) == text.count("not clinically validated") == 1
    for words in (
        "Test, Patient",
        "PAT001",
        "2026-11-29",
        "Moderate non-proliferative diabetic retinopathy",
        "No macular oedema",
        "Cup-to-disc ratio 0.42",
        "refer to an eye care professional",
        "not gradable",
        "retina-dr-demo 0.1.0",
    ):
        assert words in text, words


def test_non_latin_names_are_replaced_not_fatal(tmp_path: Path) -> None:
    pdf = _pdf(name="\u0418\u0432\u0430\u043d\u043e\u0432^Zo\u00eb \u738b", eyes=[])
    text = _text(pdf, tmp_path)
    assert "Zo\u00eb" in text and "?" in text
    assert DEMONSTRATION in text


def test_encapsulated_pdf_round_trip_and_dciodvfy(images: list[Dataset], tmp_path: Path) -> None:
    pdf = _pdf() + b"\n" * ((len(_pdf()) + 1) % 2)  # odd length: padding must be added
    assert len(pdf) % 2 == 1
    ds = encapsulated_pdf(
        pdf,
        images=images,
        series_instance_uid=new_uid(),
        sop_instance_uid=new_uid(),
        title="Retinal screening report",
    )
    data = to_bytes(ds)
    back = pydicom.dcmread(io.BytesIO(data))
    assert back.SOPClassUID == ENCAPSULATED_PDF and back.Modality == "DOC"
    assert back.MIMETypeOfEncapsulatedDocument == "application/pdf"
    assert back.EncapsulatedDocumentLength == len(pdf)
    assert back.EncapsulatedDocument[: back.EncapsulatedDocumentLength] == pdf
    assert len(back.EncapsulatedDocument) % 2 == 0
    assert back.PatientID == images[0].PatientID
    assert back.StudyInstanceUID == images[0].StudyInstanceUID
    assert [i.ReferencedSOPInstanceUID for i in back.SourceInstanceSequence] == [
        i.SOPInstanceUID for i in images
    ]
    path = tmp_path / "report.dcm"
    path.write_bytes(data)
    run = subprocess.run(
        [require_tool("dciodvfy"), str(path)], capture_output=True, text=True, timeout=60
    )
    output = run.stdout + run.stderr
    assert "EncapsulatedPDF" in output
    assert [line for line in output.splitlines() if line.startswith("Error")] == [], output


def test_a_signed_report_names_the_reports_it_replaces(
    images: list[Dataset], tmp_path: Path
) -> None:
    """VERIFIED, and a Predecessor Documents Sequence (study → series → instance) that names
    the preliminary report and the signed one it amends; dciodvfy zero errors, no warning."""
    series = new_uid()
    preliminary = encapsulated_pdf(
        _pdf(), images=images, series_instance_uid=series, sop_instance_uid=new_uid()
    )
    assert "VerificationFlag" not in preliminary
    assert "PredecessorDocumentsSequence" not in preliminary
    signed = encapsulated_pdf(
        _pdf(), images=images, series_instance_uid=series, sop_instance_uid=new_uid(),
        instance_number=2, replaces=[preliminary], verified=True,
    )  # fmt: skip
    amended = encapsulated_pdf(
        _pdf(), images=images, series_instance_uid=series, sop_instance_uid=new_uid(),
        instance_number=3, replaces=[signed, preliminary], verified=True,
    )  # fmt: skip
    back = pydicom.dcmread(io.BytesIO(to_bytes(amended)))
    assert back.VerificationFlag == "VERIFIED"
    (study,) = back.PredecessorDocumentsSequence
    assert study.StudyInstanceUID == images[0].StudyInstanceUID
    (in_series,) = study.ReferencedSeriesSequence
    assert in_series.SeriesInstanceUID == series
    assert [
        (r.ReferencedSOPClassUID, r.ReferencedSOPInstanceUID)
        for r in in_series.ReferencedSOPSequence
    ] == [
        (ENCAPSULATED_PDF, signed.SOPInstanceUID),
        (ENCAPSULATED_PDF, preliminary.SOPInstanceUID),
    ]
    path = tmp_path / "amended.dcm"
    path.write_bytes(to_bytes(amended))
    run = subprocess.run(
        [require_tool("dciodvfy"), str(path)], capture_output=True, text=True, timeout=60
    )
    output = run.stdout + run.stderr
    assert [line for line in output.splitlines() if line.startswith("Error")] == [], output
    assert "not present in standard" not in output, output


def test_encapsulated_pdf_rejects_non_pdf(images: list[Dataset]) -> None:
    with pytest.raises(ValueError, match="not a PDF"):
        encapsulated_pdf(
            b"hello",
            images=images,
            series_instance_uid=new_uid(),
            sop_instance_uid=new_uid(),
        )
