"""The screening report people read: an A4 PDF (reportlab) with embedded fonts.

Every page carries the clinic's name and address (settings ``clinic_name`` and
``clinic_address``; a neutral "Retinal screening report" header when both are empty), the
report's status — "Preliminary — automated result awaiting review" until a clinician signs,
then "Signed — <meaning> by <signer>" — and a footer with the patient's name, patient ID,
screening date and "Page X of Y" (the page count comes from a first build pass). The story:
patient details, the demonstration statement (once), the outcome headline (it wraps, and long
text is set smaller, so it always fits its box), recall and prompts, then each eye — right (OD)
before left (OS), everywhere — with photograph, heatmap, quality and findings, the signer block
of a signed report, and the models.

Text goes through ``report_page.safe``: characters the embedded font (Bitstream Vera) lacks,
e.g. a patient name in Cyrillic or Han script, are printed as "?" instead of crashing; of a
DICOM name with several component groups the alphabetic one is used when it is not empty.
Pictures are embedded as print-size JPEG and pages are compressed; the output is reproducible
(``invariant=1``: same input, same bytes).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from reportlab.lib import colors  # type: ignore[import-untyped]
from reportlab.lib.enums import TA_CENTER  # type: ignore[import-untyped]
from reportlab.lib.pagesizes import A4  # type: ignore[import-untyped]
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet  # type: ignore[import-untyped]
from reportlab.lib.units import mm  # type: ignore[import-untyped]
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

from appliance.dicom.report_oct import OctPage, oct_section
from appliance.dicom.report_page import (
    BOTTOM,
    FONT,
    FONT_BOLD,
    LEFT,
    REPORT_TITLE,
    RIGHT,
    TOP,
    WIDTH,
    PageFrame,
    address_lines,
    fonts,
    plain,
    print_jpeg,
    safe,
)

DEMONSTRATION = "Demonstration model \u2014 not clinically validated"
DEMONSTRATION_OCT = " (photograph and OCT results)"
PRELIMINARY = "Preliminary \u2014 automated result awaiting review"
DR_WORDS = (
    "No diabetic retinopathy",
    "Mild non-proliferative diabetic retinopathy",
    "Moderate non-proliferative diabetic retinopathy",
    "Severe non-proliferative diabetic retinopathy",
    "Proliferative diabetic retinopathy",
)
EYE_WORDS = {"R": "Right eye (OD)", "L": "Left eye (OS)"}
EYE_ORDER = {"R": 0, "L": 1}  # OD before OS; anything else after them
SEX_WORDS = {"M": "Male", "F": "Female", "O": "Other"}
IMAGE_WIDTH = 72 * mm
IMAGE_HEIGHT = 50 * mm

_BASE = getSampleStyleSheet()
STYLES = {
    "h2": ParagraphStyle("h2", parent=_BASE["Heading2"], fontName=FONT_BOLD, spaceAfter=2),
    "body": ParagraphStyle("body", parent=_BASE["BodyText"], fontName=FONT, fontSize=10),
    "small": ParagraphStyle("small", parent=_BASE["BodyText"], fontName=FONT, fontSize=8),
    "banner": ParagraphStyle(
        "banner",
        parent=_BASE["BodyText"],
        fontName=FONT_BOLD,
        fontSize=12,
        textColor=colors.white,
        alignment=TA_CENTER,
    ),
    "caption": ParagraphStyle(
        "caption", parent=_BASE["BodyText"], fontName=FONT, fontSize=8, alignment=TA_CENTER
    ),
}
# The outcome headline: smaller as it gets longer; it wraps (long words too) at any length.
HEADLINE_SIZES = ((100, 16), (250, 13), (None, 11))


@dataclass(frozen=True)
class Clinic:
    """Who issues the report, printed at the top of every page (settings ``clinic_*``)."""

    name: str = ""
    address: str = ""  # one line, or several separated by newlines (two are printed)


@dataclass(frozen=True)
class ReportSignature:
    """A clinician's signature on the report: printed as a signer block, and every page then
    says "Signed" instead of preliminary. ``signed_at`` must be timezone-aware (shown in UTC)."""

    signer_name: str  # full name as printed, e.g. "Dr Jane Okafor"
    credentials: str  # e.g. "FRCOphth, consultant ophthalmologist"
    meaning: str  # what the signature means, e.g. "reviewed and approved", "amended"
    signed_at: datetime
    decision: str  # the clinician's decision in words

    def __post_init__(self) -> None:
        if not self.signer_name.strip() or not self.meaning.strip():
            raise ValueError("a report signature needs the signer's name and its meaning")
        if self.signed_at.tzinfo is None or self.signed_at.utcoffset() is None:
            raise ValueError("ReportSignature.signed_at must be timezone-aware")

    @property
    def when(self) -> str:
        return self.signed_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _date(value: str) -> str:
    digits = (value or "").strip()
    if len(digits) == 8 and digits.isdigit():
        return f"{digits[:4]}-{digits[4:6]}-{digits[6:]}"
    return digits or "not given"


def _name(value: str) -> str:
    """A DICOM person name in reading order ("Family, Given Middle"); the alphabetic component
    group when it is not empty, otherwise the first group that is."""
    groups = [g for g in (value or "").split("=") if g.strip("^ ")]
    parts = [p for p in (groups[0] if groups else "").split("^") if p]
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


def _right_first(prompts: Sequence[str]) -> list[str]:
    """Prompts with the eye-specific ones reordered right eye first; the others stay put."""
    eyed = [i for i, p in enumerate(prompts) if p.startswith(("Right eye", "Left eye"))]
    ordered = sorted((prompts[i] for i in eyed), key=lambda p: not p.startswith("Right eye"))
    out = list(prompts)
    for index, prompt in zip(eyed, ordered, strict=True):
        out[index] = prompt
    return out


def _table(rows: list[list[Any]], widths: Any, style: list[tuple[Any, ...]], **kw: Any) -> Table:
    """A Table in the embedded font (a cell's default font would be Helvetica, not embedded)."""
    table = Table(rows, colWidths=widths, **kw)
    table.setStyle(TableStyle([("FONTNAME", (0, 0), (-1, -1), FONT), *style]))
    return table


def _picture(picture: tuple[bytes, int, int] | None, caption: str) -> list[Flowable]:
    """A print-size JPEG (``report_page.print_jpeg``) scaled into its box, or an empty box."""
    if picture is None:
        box = _table(
            [[Paragraph("No image", STYLES["caption"])]],
            IMAGE_WIDTH,
            [("BOX", (0, 0), (-1, -1), 0.5, colors.grey), ("VALIGN", (0, 0), (-1, -1), "MIDDLE")],
            rowHeights=IMAGE_HEIGHT,
        )
        return [box, Paragraph(safe(caption), STYLES["caption"])]
    jpeg, width, height = picture
    scale = min(IMAGE_WIDTH / width, IMAGE_HEIGHT / height)
    image = Image(io.BytesIO(jpeg), width=width * scale, height=height * scale)
    return [image, Paragraph(safe(caption), STYLES["caption"])]


def _eye_section(eye: Mapping[str, Any], pictures: tuple[Any, Any]) -> KeepTogether:
    side = str(eye.get("eye", ""))
    parts: list[Flowable] = [Paragraph(safe(EYE_WORDS.get(side, side or "Eye")), STYLES["h2"])]
    parts.append(
        _table(
            [[_picture(pictures[0], "Photograph"), _picture(pictures[1], "Heatmap")]],
            [IMAGE_WIDTH + 4 * mm] * 2,
            [("VALIGN", (0, 0), (-1, -1), "TOP")],
        )
    )
    gradable = eye.get("gradable")
    if gradable is None:
        quality = "Photograph quality: not assessed"
    else:
        quality = "Photograph quality: " + ("good enough to grade" if gradable else "not gradable")
    parts.append(Paragraph(f"<b>{safe(quality)}</b>", STYLES["body"]))
    for reason in eye.get("quality_reasons") or ():
        parts.append(Paragraph("\u2022 " + safe(reason), STYLES["body"]))
    for advice in eye.get("guidance") or ():
        parts.append(Paragraph("Advice: " + safe(advice), STYLES["body"]))
    findings = list(eye.get("findings") or ())
    if findings:
        parts.append(Paragraph("<b>Findings</b>", STYLES["body"]))
        parts.extend(Paragraph("\u2022 " + safe(f), STYLES["body"]) for f in findings)
    elif gradable is not False:
        parts.append(Paragraph("No findings reported.", STYLES["body"]))
    parts.append(Spacer(1, 3 * mm))
    return KeepTogether(parts)


def _sections(
    ordered: Sequence[Mapping[str, Any]], pictures: Sequence[Any], oct_pages: Sequence[OctPage]
) -> list[Flowable]:
    """Each eye's photograph section(s), then its OCT section(s): right eye first."""
    octs = sorted(oct_pages, key=lambda p: EYE_ORDER.get(p.eye, len(EYE_ORDER)))
    out: list[Flowable] = []
    for eye, pair in zip(ordered, pictures, strict=True):
        rank = EYE_ORDER.get(str(eye.get("eye", "")), len(EYE_ORDER))
        while octs and EYE_ORDER.get(octs[0].eye, len(EYE_ORDER)) < rank:
            out.append(oct_section(octs.pop(0), STYLES))
        out.append(_eye_section(eye, pair))
    return out + [oct_section(page, STYLES) for page in octs]


def _boxed(flowables: list[Flowable], background: Any, border: Any) -> Table:
    """A box the width of the page's text; its row may split across pages, so any content fits."""
    return _table(
        [[flowables]],
        [WIDTH],
        [
            ("BACKGROUND", (0, 0), (-1, -1), background),
            ("BOX", (0, 0), (-1, -1), 1, border),
            ("LEFTPADDING", (0, 0), (-1, -1), 6),
            ("RIGHTPADDING", (0, 0), (-1, -1), 6),
            ("TOPPADDING", (0, 0), (-1, -1), 5),
            ("BOTTOMPADDING", (0, 0), (-1, -1), 6),
        ],
        splitInRow=1,
    )


def _headline(text: str) -> Paragraph:
    """The outcome in one wrapped paragraph, set smaller the longer it is."""
    size = next(s for limit, s in HEADLINE_SIZES if limit is None or len(text) <= limit)
    style = ParagraphStyle(
        f"headline{size}",
        parent=_BASE["BodyText"],
        fontName=FONT_BOLD,
        fontSize=size,
        leading=size * 1.25,
        splitLongWords=1,
    )
    return Paragraph(safe(text), style)


def _recall(outcome: Mapping[str, Any]) -> str:
    months = outcome.get("recall_months")
    urgency = outcome.get("urgency")
    parts = []
    if months:
        parts.append(f"Next screening in {int(months)} months.")
    if urgency:
        parts.append(f"Urgency: {urgency}.")
    return " ".join(parts)


def _patient_table(patient: Mapping[str, str], study_date: str) -> Table:
    rows = [
        [
            "Patient",
            safe(_name(patient.get("name", ""))),
            "Date of screening",
            safe(_date(study_date)),
        ],
        [
            "Patient ID",
            safe(patient.get("id") or "not given"),
            "Date of birth",
            safe(_date(patient.get("birth_date", ""))),
        ],
        ["Sex", SEX_WORDS.get(patient.get("sex", ""), "not given"), "", ""],
    ]
    return _table(
        [[Paragraph(c, STYLES["body"]) for c in row] for row in rows],
        [24 * mm, 56 * mm, 38 * mm, 56 * mm],
        [("LINEBELOW", (0, -1), (-1, -1), 0.5, colors.grey)],
    )


def _signer_block(signature: ReportSignature) -> KeepTogether:
    rows = [
        ("Signed by", signature.signer_name),
        ("Credentials", signature.credentials or "not given"),
        ("Meaning of signature", signature.meaning),
        ("Signed on", signature.when),
        ("Decision", signature.decision or "not given"),
    ]
    table = _table(
        [
            [Paragraph(f"<b>{label}</b>", STYLES["body"]), Paragraph(safe(value), STYLES["body"])]
            for label, value in rows
        ],
        [50 * mm, WIDTH - 50 * mm],
        [
            ("BOX", (0, 0), (-1, -1), 1, colors.HexColor("#1e6b34")),
            ("BACKGROUND", (0, 0), (0, -1), colors.HexColor("#e8f3ea")),
            ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ],
    )
    return KeepTogether([Paragraph("Clinician sign-off", STYLES["h2"]), table])


def report_pdf(
    *,
    patient: Mapping[str, str],
    study_date: str,
    eyes: Sequence[Mapping[str, Any]],
    outcome: Mapping[str, Any],
    models: Sequence[Mapping[str, Any]],
    disclaimer: str = "",
    clinic: Clinic | None = None,
    signature: ReportSignature | None = None,
    oct_pages: Sequence[OctPage] = (),
) -> bytes:
    """The A4 report: see the module docstring for what is on it.

    ``eyes`` items: ``eye`` ("R"/"L"), ``photo_jpeg``, ``heatmap_png`` (image bytes, any
    format Pillow reads, or None), ``gradable``, ``quality_reasons`` and ``guidance`` (plain
    sentences), ``findings`` (plain sentences, see ``findings_in_words``); printed right eye
    first whatever their order. ``outcome``: ``text``, ``recall_months``, ``urgency``,
    ``prompts``. ``disclaimer``: a further sentence for the small print (the demonstration
    statement itself is printed once, by this function). ``signature``: None for the
    preliminary (automated) report. ``oct_pages``: one ``report_oct.OctPage`` per eye with an
    OCT, each printed after that eye's photograph section (``report_oct.oct_section``).
    """
    fonts()  # registered before any style is used
    banner = DEMONSTRATION_OCT if oct_pages else ""
    frame = _page_frame(patient, study_date, clinic or Clinic(), signature)
    ordered = sorted(eyes, key=lambda e: EYE_ORDER.get(str(e.get("eye", "")), len(EYE_ORDER)))
    pictures = [
        (print_jpeg(e.get("photo_jpeg")), print_jpeg(e.get("heatmap_png"))) for e in ordered
    ]

    def story() -> list[Flowable]:
        parts: list[Flowable] = [_patient_table(patient, study_date), Spacer(1, 3 * mm)]
        parts.append(
            _boxed(
                [Paragraph(safe(DEMONSTRATION + banner + "."), STYLES["banner"])],
                colors.darkred,
                colors.darkred,
            )
        )
        parts.append(Spacer(1, 3 * mm))
        result: list[Flowable] = [_headline(str(outcome.get("text", "")))]
        recall = _recall(outcome)
        if recall:
            result.append(Paragraph(f"<b>{safe(recall)}</b>", STYLES["body"]))
        for prompt in _right_first([str(p) for p in outcome.get("prompts") or ()]):
            result.append(Paragraph("\u2022 " + safe(prompt), STYLES["body"]))
        parts += [
            _boxed(result, colors.HexColor("#eef3fb"), colors.HexColor("#36c")),
            Spacer(1, 2 * mm),
        ]
        parts += _sections(ordered, pictures, oct_pages)
        if signature is not None:
            parts += [_signer_block(signature), Spacer(1, 3 * mm)]
        if models:
            described = "; ".join(
                " ".join(str(m.get(k)) for k in ("name", "version", "variant") if m.get(k))
                for m in models
            )
            parts.append(Paragraph("<b>Models:</b> " + safe(described), STYLES["small"]))
        if disclaimer.strip():
            parts.append(Paragraph(safe(disclaimer.strip()), STYLES["small"]))
        return parts

    _, total = _build(story, frame, 0)  # first pass: how many pages
    pdf, pages = _build(story, frame, total)
    if pages != total:  # the page frame never changes the layout; this would be a bug
        raise RuntimeError(f"the report had {total} pages, then {pages}")
    return pdf


def _page_frame(
    patient: Mapping[str, str],
    study_date: str,
    clinic: Clinic,
    signature: ReportSignature | None,
) -> PageFrame:
    """What every page carries: letterhead, status (preliminary or signed) and patient line."""
    if signature is None:
        status = PRELIMINARY
    else:
        status = f"Signed \u2014 {signature.meaning} by {signature.signer_name}"
        if signature.credentials:
            status += f", {signature.credentials}"
        status += f", {signature.when}"
    return PageFrame(
        clinic_name=plain(clinic.name).strip(),
        clinic_address=address_lines(clinic.address),
        status=plain(status),
        signed=signature is not None,
        patient=plain(_name(patient.get("name", ""))),
        patient_rest=plain(
            f" \u00b7 ID {patient.get('id') or 'not given'}"
            f" \u00b7 Screening date {_date(study_date)}"
        ),
    )


def _build(story: Callable[[], list[Flowable]], frame: PageFrame, total: int) -> tuple[bytes, int]:
    buffer = io.BytesIO()
    doc = SimpleDocTemplate(
        buffer,
        pagesize=A4,
        leftMargin=LEFT,
        rightMargin=RIGHT,
        topMargin=TOP,
        bottomMargin=BOTTOM,
        title=REPORT_TITLE,
        author="Retinal screening appliance",
        invariant=1,
        pageCompression=1,
        initialFontName=FONT,
    )

    def on_page(canvas: Any, doc: Any) -> None:
        frame.draw(canvas, doc.page, total)

    doc.build(story(), onFirstPage=on_page, onLaterPages=on_page)
    return buffer.getvalue(), int(doc.page)
