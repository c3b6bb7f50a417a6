"""The OCT section of the PDF report, one per eye with an OCT: the ETDRS grid drawn as vectors
with the nine subfield thicknesses (µm), the thickness map and the central B-scan with its
layers (pictures the caller gives, e.g. from ``oct_pictures``), and in words the central subfield
thickness (CST), the macular volume, fluid, the scan's quality and signal. The report's
demonstration statement then names the OCT results too (``report_pdf``).

The grid is seen as the pictures are, from the front: superior up, and nasal to the right for a
right eye, to the left for a left eye (N and T mark the sides). A subfield not measured shows
"-". Everything is in the report's embedded font.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from reportlab.graphics.shapes import Circle, Drawing, Line, String  # type: ignore[import-untyped]
from reportlab.lib import colors  # type: ignore[import-untyped]
from reportlab.lib.styles import ParagraphStyle  # type: ignore[import-untyped]
from reportlab.lib.units import mm  # type: ignore[import-untyped]
from reportlab.platypus import (  # type: ignore[import-untyped]
    Flowable,
    Image,
    KeepTogether,
    Paragraph,
    Spacer,
    Table,
    TableStyle,
)

from appliance.dicom.oct_pictures import png_bytes
from appliance.dicom.report_page import FONT, FONT_BOLD, print_jpeg, safe
from appliance.domain import OctFinding

GRID_SIZE = 50 * mm  # the drawing's side
PICTURE_HEIGHT = 50 * mm
MAP_WIDTH = 50 * mm
BSCAN_WIDTH = 66 * mm
EYE_TITLES = {"R": "Right eye (OD) \u2014 macular OCT", "L": "Left eye (OS) \u2014 macular OCT"}
# ETDRS subfield → (ring radius as a share of the grid's radius, direction in degrees from the
# viewer's right, anticlockwise) for a right eye; a left eye mirrors nasal and temporal.
_PLACES = {
    "central": (0.0, 0.0),
    "inner_superior": (1 / 3, 90.0),
    "inner_nasal": (1 / 3, 0.0),
    "inner_inferior": (1 / 3, 270.0),
    "inner_temporal": (1 / 3, 180.0),
    "outer_superior": (3 / 4, 90.0),
    "outer_nasal": (3 / 4, 0.0),
    "outer_inferior": (3 / 4, 270.0),
    "outer_temporal": (3 / 4, 180.0),
}
Picture = bytes | np.ndarray | None


@dataclass(frozen=True)
class OctPage:
    """One eye's OCT for the report: the ``OctFinding``, and pictures as image bytes (any
    format Pillow reads) or RGB uint8 arrays, None for "No image". ``fluid_centre``: the
    outcome's decision on fluid in the central subfield, when made; ``guidance``: the quality
    check's retake advice (``QualityReport.guidance``), printed for a scan not gradable."""

    finding: OctFinding
    thickness_map: Picture = None
    bscan: Picture = None
    fluid_centre: bool | None = None
    guidance: tuple[str, ...] = ()  # retake advice, one plain sentence per quality reason
    fluid_method: str = ""  # who found the fluid (the record's ``fluid_method``), if known

    @property
    def eye(self) -> str:
        return self.finding.laterality or ""


def _subfields(finding: OctFinding) -> dict[str, float | None]:
    values = dict(finding.subfield_um)
    if finding.cst_um is not None:
        values["central"] = finding.cst_um
    return values


def etdrs_drawing(finding: OctFinding, size: float = GRID_SIZE) -> Drawing:
    """The ETDRS grid (1, 3 and 6 mm circles, diagonals) with each subfield's thickness."""
    drawing = Drawing(size, size)
    drawing.initialFontName = FONT  # not Helvetica: every font in the report is embedded
    centre, radius = size / 2, size / 2 - 3 * mm
    for share in (1 / 6, 1 / 2, 1.0):
        drawing.add(
            Circle(centre, centre, radius * share, strokeColor=colors.black, fillColor=None)
        )
    for angle in (45.0, 135.0, 225.0, 315.0):
        cos, sin = math.cos(math.radians(angle)), math.sin(math.radians(angle))
        drawing.add(
            Line(
                centre + cos * radius / 6,
                centre + sin * radius / 6,
                centre + cos * radius,
                centre + sin * radius,
                strokeColor=colors.black,
            )
        )
    mirror = finding.laterality == "L"  # nasal on the viewer's left
    values = _subfields(finding)
    for name, (share, angle) in _PLACES.items():
        if mirror and angle in (0.0, 180.0):
            angle = 180.0 - angle
        x = centre + share * radius * math.cos(math.radians(angle))
        y = centre + share * radius * math.sin(math.radians(angle))
        value = values.get(name)
        text = "-" if value is None or not math.isfinite(value) else f"{float(value):.0f}"
        size_pt = 8 if name == "central" else 7.5
        drawing.add(
            String(x, y - 3, text, fontName=FONT_BOLD, fontSize=size_pt, textAnchor="middle")
        )
    nasal_x, temporal_x = (2, size - 2) if mirror else (size - 2, 2)
    for label, x, anchor in (
        ("N", nasal_x, "start" if mirror else "end"),
        ("T", temporal_x, "end" if mirror else "start"),
    ):
        drawing.add(String(x, 2, label, fontName=FONT, fontSize=7, textAnchor=anchor))
    return drawing


def _picture(picture: Picture, width: float, caption: str, style: ParagraphStyle) -> list[Flowable]:
    data = png_bytes(picture) if isinstance(picture, np.ndarray) else picture
    printed = print_jpeg(data)
    if printed is None:
        box = Table([[Paragraph("No image", style)]], colWidths=width, rowHeights=PICTURE_HEIGHT)
        box.setStyle(
            TableStyle(
                [
                    ("FONTNAME", (0, 0), (-1, -1), FONT),
                    ("BOX", (0, 0), (-1, -1), 0.5, colors.grey),
                    ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
                ]
            )
        )
        return [box, Paragraph(safe(caption), style)]
    jpeg, w, h = printed
    scale = min(width / w, PICTURE_HEIGHT / h)
    image = Image(io.BytesIO(jpeg), width=w * scale, height=h * scale)
    return [image, Paragraph(safe(caption), style)]


def _known(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def oct_words(page: OctPage) -> list[str]:
    """The OCT's results in plain sentences."""
    finding = page.finding
    if not finding.gradable:
        words = ["OCT quality: not gradable \u2014 the scan should be repeated."]
        words += [f"Reason: {reason}" for reason in finding.quality_reasons]
        return words + [f"Advice: {advice}" for advice in page.guidance]
    words = ["OCT quality: good enough to grade."]
    if _known(finding.cst_um):
        words.append(f"Central subfield thickness (CST): {finding.cst_um:.0f} \u00b5m")
    if _known(finding.macular_volume_mm3):
        words.append(f"Macular volume (6 mm): {finding.macular_volume_mm3:.2f} mm\u00b3")
    fluid = []
    if finding.p_fluid_centre is not None:
        fluid.append(f"central subfield {finding.p_fluid_centre:.2f}")
    if finding.p_fluid_any is not None:
        fluid.append(f"anywhere {finding.p_fluid_any:.2f}")
    if page.fluid_centre is not None:
        verdict = "present" if page.fluid_centre else "not found"
        words.append(f"Fluid in the central subfield: {verdict}")
    if fluid:
        words.append("Fluid probability: " + ", ".join(fluid))
    if page.fluid_method:
        words.append(f"Fluid found by: {page.fluid_method}")
    if finding.signal_db is not None:
        words.append(f"Signal strength: {finding.signal_db:.1f} dB")
    return words


def oct_section(page: OctPage, styles: Mapping[str, ParagraphStyle]) -> KeepTogether:
    """One eye's OCT block: title, grid + thickness map + B-scan, the results in words."""
    caption = styles["caption"]
    grid_caption = Paragraph(safe("ETDRS grid, thickness in \u00b5m"), caption)
    grid = [etdrs_drawing(page.finding), grid_caption]
    row = [
        grid,
        _picture(page.thickness_map, MAP_WIDTH, "Thickness map", caption),
        _picture(page.bscan, BSCAN_WIDTH, "Central B-scan, layers drawn", caption),
    ]
    table = Table([row], colWidths=[GRID_SIZE + 4 * mm, MAP_WIDTH + 4 * mm, BSCAN_WIDTH + 4 * mm])
    table.setStyle(
        TableStyle([("FONTNAME", (0, 0), (-1, -1), FONT), ("VALIGN", (0, 0), (-1, -1), "TOP")])
    )
    parts: list[Flowable] = [
        Paragraph(safe(EYE_TITLES.get(page.eye, "Macular OCT")), styles["h2"]),
        table,
    ]
    parts += [Paragraph("\u2022 " + safe(line), styles["body"]) for line in oct_words(page)]
    parts.append(Spacer(1, 3 * mm))
    return KeepTogether(parts)
