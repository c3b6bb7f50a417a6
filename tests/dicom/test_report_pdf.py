"""The PDF report as a reader sees it, checked with poppler: every page renders, every font is
embedded, every page names the patient and its page number and says preliminary or signed,
right eye before left, the demonstration statement once, the headline inside its box, the size
of a typical two-eye report, and the same bytes for the same input."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from appliance.dicom.report_pdf import (
    DEMONSTRATION,
    PRELIMINARY,
    Clinic,
    ReportSignature,
    findings_in_words,
    report_pdf,
)
from tests.conftest import fundus, jpeg_bytes, png_bytes, require_tool

PATIENT = {"name": "Okafor^Adaeze^N", "id": "PAT-0042", "birth_date": "19580312", "sex": "F"}
NAME, PATIENT_ID, DATE = "Okafor, Adaeze N", "PAT-0042", "2026-11-29"
CLINIC = Clinic("Riverside Eye Clinic", "12 High Street\nSpringfield SP1 2AB")
SIGNATURE = ReportSignature(
    signer_name="Dr Jane Mensah",
    credentials="FRCOphth, consultant ophthalmologist",
    meaning="reviewed and approved",
    signed_at=datetime(2026, 11, 30, 15, 5, tzinfo=timezone(timedelta(hours=1))),
    decision="Refer to an eye care professional (routine)",
)
OUTCOME = {
    "text": "More than mild diabetic retinopathy detected \u2014 refer to an eye care professional",
    "recall_months": None,
    "urgency": "routine",
    "prompts": ["Left eye: retake the photograph.", "Right eye: photograph accepted."],
}
MODELS = [{"name": "retina-dr-demo", "version": "0.1.0", "variant": "int8"}]
PAGE_WIDTH, MARGIN = 595.2756, 51.0236  # A4 in points; the report's left and right margins


def _eye(side: str, seed: int, grade: int, size: tuple[int, int] = (1536, 2048)) -> dict[str, Any]:
    """An eye as a camera sends it: a full-size JPEG, and the pipeline's 512 px PNG heatmap."""
    from appliance.inference.overlay import overlay

    rgb = fundus(seed=seed, size=size, eye=side)
    cam = np.zeros((16, 16), np.float32)
    cam[4:10, 5:12] = 1.0
    return {
        "eye": side,
        "photo_jpeg": jpeg_bytes(rgb),
        "heatmap_png": png_bytes(overlay(rgb, cam)),
        "gradable": True,
        "findings": findings_in_words(dr_grade=grade, dme=False, cdr=0.3 + grade / 10),
    }


@pytest.fixture(scope="module")
def eyes() -> list[dict[str, Any]]:
    """Left eye first on purpose: the report must still print the right eye first."""
    return [_eye("L", 4, 0), _eye("R", 3, 2)]


def _report(eyes: list[dict[str, Any]], **changes: Any) -> bytes:
    arguments: dict[str, Any] = {
        "patient": PATIENT,
        "study_date": "20261129",
        "eyes": eyes,
        "outcome": OUTCOME,
        "models": MODELS,
        "disclaimer": "The models were trained on synthetic images.",
        "clinic": CLINIC,
    }
    return report_pdf(**{**arguments, **changes})


@pytest.fixture(scope="module")
def preliminary(eyes: list[dict[str, Any]]) -> bytes:
    return _report(eyes)


@pytest.fixture(scope="module")
def signed(eyes: list[dict[str, Any]]) -> bytes:
    return _report(eyes, signature=SIGNATURE)


def _poppler(tool: str, pdf: bytes, tmp_path: Path, *args: str) -> str:
    path = tmp_path / "report.pdf"
    path.write_bytes(pdf)
    run = subprocess.run(
        [require_tool(tool), *args, str(path), *(["-"] if tool == "pdftotext" else [])],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    return run.stdout


def _pages(pdf: bytes, tmp_path: Path) -> list[str]:
    """Each page's text (pdftotext), whitespace collapsed."""
    pages = _poppler("pdftotext", pdf, tmp_path, "-layout").split("\f")
    return [" ".join(page.split()) for page in pages if page.strip()]


def _text(pdf: bytes, tmp_path: Path) -> str:
    return " ".join(_pages(pdf, tmp_path))


def test_every_page_renders_and_is_not_blank(preliminary: bytes, tmp_path: Path) -> None:
    pages = len(_pages(preliminary, tmp_path))
    assert pages >= 2
    subprocess.run(
        [require_tool("pdftoppm"), "-r", "40", "-png", str(tmp_path / "report.pdf"), "page"],
        cwd=tmp_path,
        check=True,
        timeout=60,
    )
    rendered = sorted(tmp_path.glob("page-*.png"))
    assert len(rendered) == pages
    for png in rendered:
        grey = np.asarray(Image.open(png).convert("L"))
        assert (grey < 200).mean() > 0.02, png.name  # header, text and pictures, not a blank page


@pytest.mark.parametrize("kind", ["preliminary", "signed", "non_latin", "no_clinic"])
def test_every_font_is_embedded(
    kind: str, preliminary: bytes, signed: bytes, tmp_path: Path
) -> None:
    pdf = {
        "preliminary": lambda: preliminary,
        "signed": lambda: signed,
        "non_latin": lambda: _report(
            [], patient={**PATIENT, "name": "\u0418\u0432\u0430\u043d\u043e\u0432^\u738b"}
        ),
        "no_clinic": lambda: _report([], clinic=None),
    }[kind]()
    rows = _poppler("pdffonts", pdf, tmp_path).splitlines()[2:]
    assert rows, "no fonts listed"
    for row in rows:
        emb = re.split(r"\s+", row.split(" TrueType ")[-1].strip())[1]
        assert " TrueType " in row and emb == "yes", row


def test_every_page_names_the_patient_and_counts_pages(preliminary: bytes, tmp_path: Path) -> None:
    pages = _pages(preliminary, tmp_path)
    for number, page in enumerate(pages, start=1):
        for words in (NAME, PATIENT_ID, DATE, f"Page {number} of {len(pages)}", PRELIMINARY):
            assert words in page, (number, words)
        assert "Riverside Eye Clinic" in page and "12 High Street Springfield SP1 2AB" in page
        assert "Signed" not in page


def test_a_signed_report_says_so_on_every_page_with_a_signer_block(
    signed: bytes, tmp_path: Path
) -> None:
    pages = _pages(signed, tmp_path)
    status = (
        "Signed \u2014 reviewed and approved by Dr Jane Mensah, FRCOphth, consultant "
        "ophthalmologist, 2026-11-30 14:05 UTC"
    )
    for number, page in enumerate(pages, start=1):
        assert status in page and f"Page {number} of {len(pages)}" in page, number
        assert NAME in page and PATIENT_ID in page and DATE in page
        assert "Preliminary" not in page and "awaiting review" not in page
    text = " ".join(pages)
    for words in (
        "Clinician sign-off",
        "Signed by Dr Jane Mensah",
        "Credentials FRCOphth, consultant ophthalmologist",
        "Meaning of signature reviewed and approved",
        "Signed on 2026-11-30 14:05 UTC",
        "Decision Refer to an eye care professional (routine)",
    ):
        assert text.count(words) == 1, words


def test_a_signature_needs_a_name_a_meaning_and_a_time_zone() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        ReportSignature("Dr A", "MD", "amended", datetime(2026, 11, 30, 9, 0), "Refer")
    with pytest.raises(ValueError, match="name and its meaning"):
        ReportSignature(" ", "MD", "amended", datetime(2026, 11, 30, tzinfo=UTC), "Refer")


def test_right_eye_comes_first_everywhere(preliminary: bytes, tmp_path: Path) -> None:
    text = _text(preliminary, tmp_path)
    assert text.index("Right eye (OD)") < text.index("Left eye (OS)")
    # the right eye (grade 2) was given second; its findings are still printed first
    assert text.index("Moderate non-proliferative") < text.index("No diabetic retinopathy")
    assert text.index("Right eye: photograph accepted.") < text.index("Left eye: retake")
    assert text.count("Right eye (OD)") == text.count("Left eye (OS)") == 1


def test_the_demonstration_statement_is_printed_once(preliminary: bytes, tmp_path: Path) -> None:
    text = _text(preliminary, tmp_path)
    assert text.count(DEMONSTRATION + ".") == 1
    assert text.count("not clinically validated") == text.count("Demonstration model") == 1


def test_a_two_eye_report_is_small_with_jpeg_pictures(preliminary: bytes, tmp_path: Path) -> None:
    assert len(preliminary) <= 400_000, len(preliminary)
    listed = _poppler("pdfimages", preliminary, tmp_path, "-list").splitlines()[2:]
    assert len(listed) == 4  # two photographs, two heatmaps
    assert all(row.split()[8] == "jpeg" for row in listed), listed


def _signed_one_eye(photo: bytes, heatmap: bytes) -> bytes:
    eye = {"eye": "R", "photo_jpeg": photo, "heatmap_png": heatmap, "gradable": True}
    return _report([eye], signature=SIGNATURE)


def test_same_input_same_bytes_in_another_process(tmp_path: Path) -> None:
    small = _eye("R", 5, 1, size=(240, 320))
    photo, heatmap = small["photo_jpeg"], small["heatmap_png"]
    pdf = _signed_one_eye(photo, heatmap)
    assert pdf == _signed_one_eye(photo, heatmap)
    (tmp_path / "photo.jpg").write_bytes(photo)
    (tmp_path / "heatmap.png").write_bytes(heatmap)
    script = (
        "import hashlib, pathlib, sys\n"
        "from tests.dicom.test_report_pdf import _signed_one_eye\n"
        f"folder = pathlib.Path({str(tmp_path)!r})\n"
        "pdf = _signed_one_eye((folder / 'photo.jpg').read_bytes(), "
        "(folder / 'heatmap.png').read_bytes())\n"
        "sys.stdout.write(hashlib.sha256(pdf).hexdigest())\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
        env={"PYTHONHASHSEED": "12345", "PATH": "/usr/bin:/bin"},  # another str hash order
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout == hashlib.sha256(pdf).hexdigest()


@pytest.mark.parametrize(
    "headline",
    [
        "No referable retinopathy \u2014 rescreen in 12 months",
        " ".join(["Referable diabetic retinopathy in both eyes with signs of oedema"] * 4),
        " ".join(["A" * 300] + ["very long outcome text"] * 120),
    ],
    ids=["short", "long", "very-long-with-unbreakable-word"],
)
def test_the_headline_wraps_inside_its_box(headline: str, tmp_path: Path) -> None:
    pdf = _report([], outcome={**OUTCOME, "text": headline})
    words = re.findall(
        r'<word xMin="([\d.]+)" yMin="[\d.]+" xMax="([\d.]+)" yMax="[\d.]+">([^<]*)</word>',
        _poppler("pdftotext", pdf, tmp_path, "-bbox"),
    )
    assert words
    for x_min, x_max, word in words:
        assert MARGIN - 1 <= float(x_min) and float(x_max) <= PAGE_WIDTH - MARGIN + 1, word
    shown = iter("".join(w for _, _, w in words))
    assert all(c in shown for c in "".join(headline.split()))  # all of it, in order


def test_long_header_and_footer_text_stays_on_the_page(tmp_path: Path) -> None:
    long = " ".join(["Long"] * 200)
    pdf = _report(
        [],
        clinic=Clinic(f"Clinic {long}", f"Street {long}\nTown {long}\nCountry"),
        patient={**PATIENT, "name": f"Family {long}^Given", "id": "X" * 64},
        signature=ReportSignature(f"Dr {long}", long, "amended", SIGNATURE.signed_at, long),
    )
    words = re.findall(
        r'<word xMin="([\d.]+)" yMin="[\d.]+" xMax="([\d.]+)" yMax="[\d.]+">([^<]*)</word>',
        _poppler("pdftotext", pdf, tmp_path, "-bbox"),
    )
    for x_min, x_max, word in words:
        assert MARGIN - 1 <= float(x_min) and float(x_max) <= PAGE_WIDTH - MARGIN + 1, word
    pages = _pages(pdf, tmp_path)
    for number, page in enumerate(pages, start=1):
        assert page.startswith("Clinic Long") and "Signed \u2014 amended by Dr Long" in page
        assert f"\u2026 \u00b7 ID {'X' * 64} \u00b7 Screening date {DATE}" in page
        assert f"Page {number} of {len(pages)}" in page


def test_without_clinic_settings_the_header_is_neutral(tmp_path: Path) -> None:
    pages = _pages(_report([], clinic=Clinic("", "")), tmp_path)
    for page in pages:
        assert page.startswith("Retinal screening report " + PRELIMINARY), page[:80]
    assert "Riverside" not in " ".join(pages)


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("\u0418\u0432\u0430\u043d\u043e\u0432^Zo\u00eb \u738b", "??????, Zo\u00eb ?"),
        ("Wang^XiaoMing=\u738b^\u5c0f\u660e", "Wang, XiaoMing"),  # the alphabetic group
        ("=\u738b^\u5c0f\u660e", "?, ??"),
        ("Zoe\u0308^Ana", "Zo\u00eb, Ana"),  # decomposed: normalised, not "?"
    ],
)
def test_names_the_font_cannot_show_become_question_marks(
    name: str, shown: str, tmp_path: Path
) -> None:
    pages = _pages(_report([], patient={**PATIENT, "name": name}), tmp_path)
    for page in pages:
        assert f"{shown} \u00b7 ID {PATIENT_ID}" in page


def test_an_unreadable_picture_is_shown_as_no_image(tmp_path: Path) -> None:
    eye = {**_eye("R", 5, 1, size=(240, 320)), "photo_jpeg": b"\xff\xd8 not a JPEG"}
    text = _text(_report([eye]), tmp_path)
    assert "No image Photograph" in text and "Heatmap" in text
