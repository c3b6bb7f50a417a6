"""The screening report people read: a one- or two-page A4 PDF (reportlab, built-in Helvetica).

Text goes through ``_safe`` first: the built-in fonts cover Windows-1252 only, so other
characters (e.g. a patient name in Cyrillic or Han script) become "?" instead of crashing.
Output is reproducible and uncompressed (``invariant=1``, ``pageCompression=0``) so tests can
find the text in the raw stream.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any
from xml.sax.saxutils import escape

from reportlab.lib import colors  # type: ignore[import-untyped]
from reportlab.lib.enums import TA_CENTER  # type: ignore[import-untyped]
from reportlab.lib.pagesizes import A4  # type: ignore[import-untyped]
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet  # type: ignore[import-untyped]
from reportlab.lib.units import mm  # type: ignore[import-untyped]
from reportlab.lib.utils import ImageReader  # type: ignore[import-untyped]
from reportlab.platypus import (  # type: ignore[import-untyped]
    Flowable,
    Image,
    KeepTogether,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

DEMONSTRATION = "Demonstration model \u2014 not clinically validated"
DR_WORDS = (
    "No diabetic retinopathy",
    "Mild non-proliferative diabetic retinopathy",
    "Moderate non-proliferative diabetic retinopathy",
    "Severe non-proliferative diabetic retinopathy",
    "Proliferative diabetic retinopathy",
)
EYE_WORDS = {"R": "Right eye", "L": "Left eye"}
SEX_WORDS = {"M": "Male", "F": "Female", "O": "Other"}
IMAGE_WIDTH = 72 * mm
IMAGE_HEIGHT = 50 * mm

_BASE = getSampleStyleSheet()
STYLES = {
    "title": ParagraphStyle("title", parent=_BASE["Title"], fontName="Helvetica-Bold", fontSize=18),
    "h2": ParagraphStyle("h2", parent=_BASE["Heading2"], fontName="Helvetica-Bold", spaceAfter=2),
    "body": ParagraphStyle("body", parent=_BASE["BodyText"], fontName="Helvetica", fontSize=10),
    "small": ParagraphStyle("small", parent=_BASE["BodyText"], fontName="Helvetica", fontSize=8),
    "outcome": ParagraphStyle(
        "outcome", parent=_BASE["BodyText"], fontName="Helvetica-Bold", fontSize=16, leading=20
    ),
    "banner": ParagraphStyle(
        "banner",
        parent=_BASE["BodyText"],
        fontName="Helvetica-Bold",
        fontSize=13,
        textColor=colors.white,
        alignment=TA_CENTER,
    ),
    "caption": ParagraphStyle(
        "caption", parent=_BASE["BodyText"], fontName="Helvetica", fontSize=8, alignment=TA_CENTER
    ),
}


def _safe(text: object) -> str:
    """Text the built-in Helvetica can show (cp1252), XML-escaped for Paragraph."""
    value = "" if text is None else str(text)
    return escape(value.encode("cp1252", errors="replace").decode("cp1252"))


def _date(value: str) -> str:
    digits = (value or "").strip()
    if len(digits) == 8 and digits.isdigit():
        return f"{digits[:4]}-{digits[4:6]}-{digits[6:]}"
    return digits or "not given"


def _name(value: str) -> str:
    parts = [p for p in (value or "").split("^") if p]
    if len(parts) >= 2:
        return f"{parts[0]}, " + " ".join(parts[1:])  # family, given middle ...
    return parts[0] if parts else "not given"


def findings_in_words(
    *,
    dr_grade: int | None = None,
    dme: bool | None = None,
    cdr: float | None = None,
    glaucoma_suspect: bool | None = None,
) -> list[str]:
    """Plain-word findings for one eye, e.g. "Moderate non-proliferative diabetic retinopathy"."""
    words = []
    if dr_grade is not None:
        words.append(DR_WORDS[int(dr_grade)])
    if dme is not None:
        words.append("Signs of macular oedema" if dme else "No macular oedema")
    if cdr is not None:
        words.append(f"Cup-to-disc ratio {float(cdr):.2f}")
    if glaucoma_suspect:
        words.append("Optic disc suggests possible glaucoma")
    return words


def _picture(data: bytes | None, caption: str) -> list[Flowable]:
    if not data:
        box = Table([[Paragraph("No image", STYLES["caption"])]], IMAGE_WIDTH, IMAGE_HEIGHT)
        box.setStyle(
            TableStyle(
                [
                    ("BOX", (0, 0), (-1, -1), 0.5, colors.grey),
                    ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
                ]
            )
        )
        return [box, Paragraph(_safe(caption), STYLES["caption"])]
    width, height = ImageReader(io.BytesIO(data)).getSize()
    scale = min(IMAGE_WIDTH / width, IMAGE_HEIGHT / height)
    image = Image(io.BytesIO(data), width=width * scale, height=height * scale)
    return [image, Paragraph(_safe(caption), STYLES["caption"])]


def _eye_section(eye: Mapping[str, Any]) -> KeepTogether:
    side = str(eye.get("eye", ""))
    parts: list[Flowable] = [Paragraph(_safe(EYE_WORDS.get(side, side or "Eye")), STYLES["h2"])]
    pictures = Table(
        [
            [
                _picture(eye.get("photo_jpeg"), "Photograph"),
                _picture(eye.get("heatmap_png"), "Heatmap"),
            ]
        ],
        colWidths=[IMAGE_WIDTH + 4 * mm] * 2,
    )
    pictures.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP")]))
    parts.append(pictures)
    gradable = eye.get("gradable")
    if gradable is None:
        quality = "Photograph quality: not assessed"
    else:
        quality = "Photograph quality: " + ("good enough to grade" if gradable else "not gradable")
    parts.append(Paragraph(f"<b>{_safe(quality)}</b>", STYLES["body"]))
    for reason in eye.get("quality_reasons") or ():
        parts.append(Paragraph("\u2022 " + _safe(reason), STYLES["body"]))
    for advice in eye.get("guidance") or ():
        parts.append(Paragraph("Advice: " + _safe(advice), STYLES["body"]))
    findings = list(eye.get("findings") or ())
    if findings:
        parts.append(Paragraph("<b>Findings</b>", STYLES["body"]))
        parts.extend(Paragraph("\u2022 " + _safe(f), STYLES["body"]) for f in findings)
    elif gradable is not False:
        parts.append(Paragraph("No findings reported.", STYLES["body"]))
    parts.append(Spacer(1, 3 * mm))
    return KeepTogether(parts)


def _boxed(flowables: list[Flowable], background: Any, border: Any) -> Table:
    box = Table([[flowables]], colWidths=[A4[0] - 36 * mm])
    box.setStyle(
        TableStyle(
            [
                ("BACKGROUND", (0, 0), (-1, -1), background),
                ("BOX", (0, 0), (-1, -1), 1, border),
                ("LEFTPADDING", (0, 0), (-1, -1), 6),
                ("TOPPADDING", (0, 0), (-1, -1), 5),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 6),
            ]
        )
    )
    return box


def _recall(outcome: Mapping[str, Any]) -> str:
    months = outcome.get("recall_months")
    urgency = outcome.get("urgency")
    parts = []
    if months:
        parts.append(f"Next screening in {int(months)} months.")
    if urgency:
        parts.append(f"Urgency: {urgency}.")
    return " ".join(parts)


def report_pdf(
    *,
    patient: Mapping[str, str],
    study_date: str,
    eyes: Sequence[Mapping[str, Any]],
    outcome: Mapping[str, Any],
    models: Sequence[Mapping[str, Any]],
    disclaimer: str,
) -> bytes:
    """The A4 report: patient header, outcome and recall, per-eye photo + heatmap, models.

    ``eyes`` items: ``eye`` ("R"/"L"), ``photo_jpeg``, ``heatmap_png`` (bytes or None),
    ``gradable``, ``quality_reasons`` and ``guidance`` (plain sentences), ``findings`` (plain
    sentences, see ``findings_in_words``). ``outcome``: ``text``, ``recall_months``,
    ``urgency``, ``prompts``.
    """
    buffer = io.BytesIO()
    doc = SimpleDocTemplate(
        buffer,
        pagesize=A4,
        leftMargin=18 * mm,
        rightMargin=18 * mm,
        topMargin=14 * mm,
        bottomMargin=14 * mm,
        title="Retinal screening report",
        author="Retinal screening appliance",
        invariant=1,
        pageCompression=0,
    )
    story: list[Flowable] = [Paragraph("Retinal screening report", STYLES["title"])]
    header = [
        ["Patient", _safe(_name(patient.get("name", ""))), "Date of screening", _date(study_date)],
        [
            "Patient ID",
            _safe(patient.get("id") or "not given"),
            "Date of birth",
            _date(patient.get("birth_date", "")),
        ],
        ["Sex", SEX_WORDS.get(patient.get("sex", ""), "not given"), "", ""],
    ]
    table = Table(
        [[Paragraph(c, STYLES["body"]) for c in row] for row in header],
        colWidths=[24 * mm, 62 * mm, 34 * mm, 54 * mm],
    )
    table.setStyle(
        TableStyle(
            [
                ("FONTNAME", (0, 0), (-1, -1), "Helvetica"),
                ("LINEBELOW", (0, -1), (-1, -1), 0.5, colors.grey),
                ("TEXTCOLOR", (0, 0), (0, -1), colors.grey),
                ("TEXTCOLOR", (2, 0), (2, -1), colors.grey),
            ]
        )
    )
    story += [table, Spacer(1, 3 * mm)]
    story.append(
        _boxed([Paragraph(_safe(DEMONSTRATION), STYLES["banner"])], colors.darkred, colors.darkred)
    )
    story.append(Spacer(1, 3 * mm))
    result: list[Flowable] = [Paragraph(_safe(outcome.get("text", "")), STYLES["outcome"])]
    recall = _recall(outcome)
    if recall:
        result.append(Paragraph(f"<b>{_safe(recall)}</b>", STYLES["body"]))
    for prompt in outcome.get("prompts") or ():
        result.append(Paragraph("\u2022 " + _safe(prompt), STYLES["body"]))
    story += [
        _boxed(result, colors.HexColor("#eef3fb"), colors.HexColor("#36c")),
        Spacer(1, 2 * mm),
    ]
    story += [_eye_section(eye) for eye in eyes]
    if models:
        described = "; ".join(
            " ".join(str(m.get(k)) for k in ("name", "version", "variant") if m.get(k))
            for m in models
        )
        story.append(Paragraph("<b>Models:</b> " + _safe(described), STYLES["small"]))
    story.append(Paragraph(f"<b>{_safe(DEMONSTRATION)}.</b> {_safe(disclaimer)}", STYLES["small"]))
    doc.build(story)
    return buffer.getvalue()
