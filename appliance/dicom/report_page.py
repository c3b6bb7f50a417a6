"""What every page of the PDF report shares: embedded fonts, safe text, print-size JPEGs, and
the header and footer drawn on each page.

Fonts: Bitstream Vera (TrueType files shipped inside reportlab), registered once as the family
``ReportSans`` and embedded as subsets; the canvas starts in it too, so no PDF font is left
unembedded. Vera covers Latin-1, Latin Extended-A in part and common punctuation; ``safe`` turns
every character it lacks (Cyrillic, Greek, Han, control characters, ...) into "?", so such text
never crashes a build and never prints as empty boxes.

Images: photographs and heatmaps are decoded and re-encoded as baseline JPEG (RGB, quality 85,
long side at most ``MAX_SIDE`` pixels, about 300 dpi in the report's picture boxes); data that
is not a readable image becomes None (the report shows "No image").
"""

from __future__ import annotations

import functools
import io
import logging
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import reportlab  # type: ignore[import-untyped]
from PIL import Image
from reportlab.lib import colors  # type: ignore[import-untyped]
from reportlab.lib.fonts import addMapping  # type: ignore[import-untyped]
from reportlab.lib.pagesizes import A4  # type: ignore[import-untyped]
from reportlab.lib.units import mm  # type: ignore[import-untyped]
from reportlab.pdfbase import pdfmetrics  # type: ignore[import-untyped]
from reportlab.pdfbase.ttfonts import TTFont  # type: ignore[import-untyped]

LOGGER = logging.getLogger(__name__)
FONT = "ReportSans"
FONT_BOLD = "ReportSans-Bold"
_FONT_FILES = {
    FONT: "Vera.ttf",
    FONT_BOLD: "VeraBd.ttf",
    "ReportSans-Italic": "VeraIt.ttf",
    "ReportSans-BoldItalic": "VeraBI.ttf",
}
MAX_SIDE = 800  # pixels, long side of an embedded picture
JPEG_QUALITY = 85
LEFT = RIGHT = 18 * mm
TOP = 36 * mm  # the header: clinic, address, status band
BOTTOM = 18 * mm  # the footer: patient, ID, date, page number
WIDTH = A4[0] - LEFT - RIGHT
REPORT_TITLE = "Retinal screening report"
ELLIPSIS = "\u2026"


@functools.cache
def fonts() -> frozenset[int]:
    """Register the embedded font family once; the code points it can show."""
    folder = Path(reportlab.__file__).resolve().parent / "fonts"
    faces = {name: TTFont(name, str(folder / file)) for name, file in _FONT_FILES.items()}
    for face in faces.values():
        pdfmetrics.registerFont(face)
    for bold, italic, name in ((0, 0, FONT), (1, 0, FONT_BOLD), (0, 1, "ReportSans-Italic")):
        addMapping(FONT, bold, italic, name)
    addMapping(FONT, 1, 1, "ReportSans-BoldItalic")
    covered = set(faces[FONT].face.charToGlyph)
    for face in faces.values():
        covered &= set(face.face.charToGlyph)
    return frozenset(c for c in covered if not unicodedata.category(chr(c)).startswith("C"))


def plain(text: object) -> str:
    """``text`` as the embedded font can show it (NFC; what it lacks → "?"), not escaped."""
    value = unicodedata.normalize("NFC", "" if text is None else str(text))
    shown = fonts()
    return "".join(c if ord(c) in shown else "?" for c in value)


def safe(text: object) -> str:
    """``plain`` text, XML-escaped for a Paragraph."""
    return escape(plain(text))


def fit(
    text: str, font: str, size: float, width: float, keep: str = "", smallest: float = 6.0
) -> tuple[str, float]:
    """``text + keep`` and a size within ``width``: shrunk to ``smallest``, then ``text`` (never
    ``keep``) cut with "…"."""
    text = text[:400]  # more than any line of the page holds at ``smallest``
    while size > smallest and pdfmetrics.stringWidth(text + keep, font, size) > width:
        size -= 0.5
    if pdfmetrics.stringWidth(text + keep, font, size) <= width:
        return text + keep, size
    while text and pdfmetrics.stringWidth(text + ELLIPSIS + keep, font, size) > width:
        text = text[:-1]
    return text.rstrip() + ELLIPSIS + keep, size


def print_jpeg(data: bytes | None) -> tuple[bytes, int, int] | None:
    """A picture as a print-size baseline JPEG with its pixel size; None when unreadable."""
    if not data:
        return None
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.draft("RGB", (MAX_SIDE, MAX_SIDE))  # JPEG: decode already scaled down
            picture = image.convert("RGBA") if "A" in image.getbands() else image.convert("RGB")
        if picture.mode == "RGBA":
            white = Image.new("RGB", picture.size, "white")
            white.paste(picture, mask=picture.getchannel("A"))
            picture = white
        picture.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        picture.save(out, "JPEG", quality=JPEG_QUALITY, optimize=True)
    except (Exception, RecursionError):  # the report shows "No image" instead
        LOGGER.warning("a picture for the report could not be read")
        return None
    return out.getvalue(), picture.width, picture.height


@dataclass(frozen=True)
class PageFrame:
    """What is drawn on every page around the story: header, status band, footer."""

    clinic_name: str  # plain text; empty: the neutral header
    clinic_address: Sequence[str]  # plain lines, at most two
    status: str  # "Preliminary — ..." or "Signed — ..."
    signed: bool
    patient: str  # the patient's name (cut first when the footer is too long) ...
    patient_rest: str  # ... and " · ID … · Screening date …"

    def draw(self, canvas: Any, page: int, total: int) -> None:
        width, height = A4
        top = height - 12 * mm
        canvas.saveState()
        title, size = (self.clinic_name, 11.0) if self.clinic_name else (REPORT_TITLE, 13.0)
        if self.clinic_name:
            right = pdfmetrics.stringWidth(REPORT_TITLE, FONT, 9)
            canvas.setFont(FONT, 9)
            canvas.setFillColor(colors.grey)
            canvas.drawRightString(width - RIGHT, top, REPORT_TITLE)
            room = WIDTH - right - 6 * mm
        else:
            room = WIDTH
        text, size = fit(title, FONT_BOLD, size, room)
        canvas.setFont(FONT_BOLD, size)
        canvas.setFillColor(colors.black)
        canvas.drawString(LEFT, top, text)
        canvas.setFillColor(colors.HexColor("#444444"))
        for index, line in enumerate(self.clinic_address[:2]):
            text, size = fit(line, FONT, 8.5, WIDTH)
            canvas.setFont(FONT, size)
            canvas.drawString(LEFT, top - (4.5 + 4 * index) * mm, text)
        canvas.setStrokeColor(colors.grey)
        canvas.setLineWidth(0.5)
        canvas.line(LEFT, height - 23 * mm, width - RIGHT, height - 23 * mm)
        band = colors.HexColor("#1e6b34") if self.signed else colors.HexColor("#f3c74f")
        canvas.setFillColor(band)
        canvas.rect(LEFT, height - 31 * mm, WIDTH, 6.5 * mm, stroke=0, fill=1)
        canvas.setFillColor(colors.white if self.signed else colors.black)
        text, size = fit(self.status, FONT_BOLD, 10, WIDTH - 6 * mm)
        canvas.setFont(FONT_BOLD, size)
        canvas.drawString(LEFT + 3 * mm, height - 28.9 * mm, text)
        canvas.setStrokeColor(colors.grey)
        canvas.line(LEFT, 14 * mm, width - RIGHT, 14 * mm)
        number = f"Page {page} of {total}" if total else f"Page {page}"
        canvas.setFillColor(colors.black)
        canvas.setFont(FONT, 8.5)
        canvas.drawRightString(width - RIGHT, 10 * mm, number)
        room = WIDTH - pdfmetrics.stringWidth("Page 999 of 999", FONT, 8.5) - 6 * mm
        text, size = fit(self.patient, FONT, 8.5, room, keep=self.patient_rest)
        canvas.setFont(FONT, size)
        canvas.drawString(LEFT, 10 * mm, text)
        canvas.restoreState()


def address_lines(address: str) -> tuple[str, ...]:
    """The clinic's address as at most two plain lines (newlines kept, further lines joined)."""
    lines = [plain(line).strip() for line in address.splitlines()]
    lines = [line for line in lines if line]
    if len(lines) > 2:
        lines = [lines[0], ", ".join(lines[1:])]
    return tuple(lines)
