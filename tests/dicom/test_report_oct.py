"""The report's OCT sections, checked with poppler: CST, volume and the nine ETDRS numbers in the
text, each eye's OCT after its photographs (right eye first), the grid mirrored for a left eye,
the demonstration statement naming the OCT once, every font embedded, every page rendered,
pictures as JPEG and the size of a typical report."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from appliance.dicom.oct_pictures import bscan_rgb, thickness_map_rgb
from appliance.dicom.report_oct import OctPage
from appliance.dicom.report_pdf import DEMONSTRATION, findings_in_words, report_pdf
from appliance.domain import ETDRS_SUBFIELDS, OctFinding
from tests.conftest import fundus, jpeg_bytes, require_tool

PATIENT = {"name": "Okafor^Adaeze", "id": "PAT-0042", "birth_date": "19580312", "sex": "F"}
OUTCOME = {"text": "Centre-involving macular oedema suspected \u2014 refer", "urgency": "soon"}
FLUID_BY = "model oct-fluid-demo 0.3.0 (int8, sha256 cd4eca63d2ed)"
RIGHT_VALUES = (412.0, 388.0, 401.0, 377.0, 366.0, 321.0, 334.0, 318.0, 305.0)
LEFT_VALUES = (262.0, 311.0, 319.0, 309.0, 301.0, 277.0, 290.0, 272.0, 264.0)
SPACING = (0.12, 0.0117)


def _finding(eye: str, values: tuple[float, ...]) -> OctFinding:
    subfields = dict(zip(ETDRS_SUBFIELDS, values, strict=True))
    return OctFinding(
        capture_id=1 if eye == "R" else 2,
        laterality=eye,
        gradable=True,
        cst_um=values[0],
        subfield_um=subfields,
        macular_volume_mm3=9.04 if eye == "R" else 8.47,
        p_fluid_centre=0.83 if eye == "R" else 0.04,
        p_fluid_any=0.91 if eye == "R" else 0.1,
        signal_db=27.0,
    )


def _pictures(eye: str) -> dict[str, Any]:
    """A thickness map with a foveal pit and a B-scan with two boundaries, as arrays."""
    y = (np.arange(49) - 24) * SPACING[0]
    x = (np.arange(512) - 255.5) * SPACING[1]
    r = np.hypot(x[None, :], y[:, None])
    thickness = 320 + 50 * np.exp(-((r - 1.2) ** 2) / 0.5) - 90 * np.exp(-(r**2) / 0.1)
    frame = np.random.default_rng(5).random((496, 512)) * 60
    ilm, rpe = 150 + 25 * np.exp(-(x**2) / 0.3), np.full(512, 300.0)
    for column in range(512):
        frame[int(ilm[column]) : int(rpe[column]), column] += 120
    return {
        "thickness_map": thickness_map_rgb(thickness, SPACING, (0.1, -0.1)),
        "bscan": bscan_rgb(frame, ilm, rpe),
    }


def _eye(side: str, seed: int) -> dict[str, Any]:
    return {
        "eye": side,
        "photo_jpeg": jpeg_bytes(fundus(seed=seed, size=(768, 1024), eye=side)),
        "heatmap_png": None,
        "gradable": True,
        "findings": findings_in_words(dr_grade=1, dme=True),
    }


def _report(oct_pages: list[OctPage], eyes: list[dict[str, Any]] | None = None) -> bytes:
    return report_pdf(
        patient=PATIENT,
        study_date="20261205",
        eyes=[_eye("L", 4), _eye("R", 3)] if eyes is None else eyes,
        outcome=OUTCOME,
        models=[{"name": "retina-dr-demo", "version": "0.1.0"}],
        oct_pages=oct_pages,
    )


@pytest.fixture(scope="module")
def report() -> bytes:
    """Left eye given first on purpose: the right eye's sections still come first."""
    return _report(
        [
            OctPage(finding=_finding("L", LEFT_VALUES), **_pictures("L")),
            OctPage(
                finding=_finding("R", RIGHT_VALUES),
                fluid_centre=True,
                fluid_method=FLUID_BY,
                **_pictures("R"),
            ),  # fmt: skip
        ]
    )


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


def _text(pdf: bytes, tmp_path: Path) -> str:
    return " ".join(_poppler("pdftotext", pdf, tmp_path, "-layout").split())


def test_the_oct_numbers_are_in_the_text(report: bytes, tmp_path: Path) -> None:
    text = _text(report, tmp_path)
    assert "Central subfield thickness (CST): 412 \u00b5m" in text
    assert "Central subfield thickness (CST): 262 \u00b5m" in text
    assert "Macular volume (6 mm): 9.04 mm\u00b3" in text
    assert "Fluid in the central subfield: present" in text
    assert "Fluid probability: central subfield 0.83, anywhere 0.91" in text
    assert f"Fluid found by: {FLUID_BY}" in text  # the right eye's: a model named its fluid
    assert text.count("Fluid found by:") == 1  # the left eye's record names no method
    words = text.split()
    for value in (*RIGHT_VALUES, *LEFT_VALUES):
        assert f"{value:.0f}" in words, value  # every subfield number, as a word of its own


def test_each_eyes_oct_follows_its_photographs_right_eye_first(
    report: bytes, tmp_path: Path
) -> None:
    text = _text(report, tmp_path)
    order = [
        text.index("Right eye (OD) No image Photograph"),  # photograph, no heatmap
        text.index("Right eye (OD) \u2014 macular OCT"),
        text.index("Left eye (OS) No image Photograph"),
        text.index("Left eye (OS) \u2014 macular OCT"),
    ]
    assert order == sorted(order), order


def test_nasal_is_on_the_nasal_side_of_each_grid(report: bytes, tmp_path: Path) -> None:
    """N and T under each grid: nasal right of temporal for the right eye, left for the left."""
    boxes = _poppler("pdftotext", report, tmp_path, "-bbox")
    rows: list[dict[str, float]] = []
    for page in boxes.split("<page ")[1:]:
        letters = re.findall(r'<word xMin="([\d.]+)" yMin="([\d.]+)"[^>]*>([NT])</word>', page)
        by_row: dict[int, dict[str, float]] = {}
        for x, y, word in letters:
            by_row.setdefault(round(float(y)), {})[word] = float(x)
        rows += [row for _, row in sorted(by_row.items()) if set(row) == {"N", "T"}]
    assert len(rows) == 2, rows
    right, left = rows  # the right eye's section comes first
    assert right["N"] > right["T"] and left["N"] < left["T"]


def test_the_demonstration_statement_names_the_oct_once(report: bytes, tmp_path: Path) -> None:
    text = _text(report, tmp_path)
    assert text.count("not clinically validated") == 1
    assert DEMONSTRATION + " (photograph and OCT results)." in text


def test_fonts_embedded_pages_rendered_jpeg_pictures_and_size(
    report: bytes, tmp_path: Path
) -> None:
    rows = _poppler("pdffonts", report, tmp_path).splitlines()[2:]
    assert rows
    for row in rows:
        emb = re.split(r"\s+", row.split(" TrueType ")[-1].strip())[1]
        assert " TrueType " in row and emb == "yes", row
    subprocess.run(
        [require_tool("pdftoppm"), "-r", "40", "-png", str(tmp_path / "report.pdf"), "page"],
        cwd=tmp_path,
        check=True,
        timeout=60,
    )
    rendered = sorted(tmp_path.glob("page-*.png"))
    assert len(rendered) == _poppler("pdftotext", report, tmp_path).count("\f") >= 2
    for png in rendered:
        grey = np.asarray(Image.open(png).convert("L"))
        assert (grey < 200).mean() > 0.02, png.name
    listed = _poppler("pdfimages", report, tmp_path, "-list").splitlines()[2:]
    assert len(listed) == 6  # two photographs, two thickness maps, two B-scans
    assert all(row.split()[8] == "jpeg" for row in listed), listed
    assert len(report) <= 600_000, len(report)


def test_an_oct_only_report_and_an_ungradable_scan(tmp_path: Path) -> None:
    ungradable = OctFinding(
        capture_id=3, laterality="R", gradable=False, quality_reasons=("Blink during the scan",)
    )
    advice = ("Ask the patient to keep the eye open and repeat the scan.",)
    page = OctPage(finding=ungradable, thickness_map=b"not an image", guidance=advice)
    text = _text(_report([page], eyes=[]), tmp_path)
    assert "Right eye (OD) \u2014 macular OCT" in text
    assert "OCT quality: not gradable" in text and "Blink during the scan" in text
    assert "Advice: Ask the patient to keep the eye open and repeat the scan." in text
    assert "No image" in text and "CST" not in text
