"""The screening report: the PDF itself (``report_pdf``) and its Encapsulated PDF wrapper.

``encapsulated_pdf`` builds the Encapsulated PDF IOD (PS3.3 A.45.1) with pydicom: Modality DOC,
SC Equipment (Conversion Type WSD), Burned In Annotation YES, the PDF padded to even length,
and a Source Instance Sequence naming the OP images the report was made from. A signed report
(``verified``) carries Verification Flag VERIFIED, and the reports it replaces (``replaces``:
the preliminary one, or the earlier signed one it amends) in its Predecessor Documents
Sequence (Encapsulated Document Module). It passes ``dciodvfy`` with zero errors
(tests/dicom/test_pdf.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

from appliance.dicom import codes
from appliance.dicom.op import derived_dataset
from appliance.dicom.report_pdf import (
    DEMONSTRATION,
    PRELIMINARY,
    Clinic,
    ReportSignature,
    findings_in_words,
    report_pdf,
)

ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
MANUFACTURER = "Demonstration"

__all__ = [
    "DEMONSTRATION",
    "ENCAPSULATED_PDF",
    "PRELIMINARY",
    "Clinic",
    "ReportSignature",
    "encapsulated_pdf",
    "findings_in_words",
    "report_pdf",
]


def encapsulated_pdf(
    pdf: bytes,
    *,
    images: Sequence[Dataset],
    series_instance_uid: str,
    sop_instance_uid: str,
    title: str = "Retinal screening report",
    manufacturer: str = MANUFACTURER,
    instance_number: int = 1,
    replaces: Sequence[Dataset] = (),
    verified: bool = False,
) -> Dataset:
    """Wrap ``pdf`` as an Encapsulated PDF in the study of ``images`` (the OP sources);
    ``replaces``: the earlier reports this one supersedes; ``verified``: a signed report."""
    if not pdf.startswith(b"%PDF"):
        raise ValueError("not a PDF document (no %PDF header)")
    if not images:
        raise ValueError("encapsulated_pdf needs the source images for patient and study")
    first = images[0]
    now = datetime.now(UTC)
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")

    ds = derived_dataset(first, ENCAPSULATED_PDF, sop_instance_uid)
    # Encapsulated Document Series
    ds.Modality = "DOC"
    ds.SeriesInstanceUID = series_instance_uid
    ds.SeriesNumber = 901
    ds.SeriesDescription = "Retinal screening report"
    # General Equipment + SC Equipment
    ds.Manufacturer = manufacturer
    ds.ConversionType = "WSD"
    # Encapsulated Document
    ds.InstanceNumber = instance_number
    ds.ContentDate, ds.ContentTime = date, time
    ds.AcquisitionDateTime = date + time
    ds.BurnedInAnnotation = "YES"
    ds.RecognizableVisualFeatures = "YES"  # the report shows fundus photographs
    ds.DocumentTitle = title
    ds.ConceptNameCodeSequence = DicomSequence([codes.SCREENING_REPORT_DOCUMENT])
    ds.CodingSchemeIdentificationSequence = DicomSequence([codes.coding_scheme_item()])
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.SourceInstanceSequence = DicomSequence([_reference(image) for image in images])
    if verified:
        ds.VerificationFlag = "VERIFIED"
    if replaces:
        ds.PredecessorDocumentsSequence = predecessor_documents(replaces)
    ds.EncapsulatedDocument = pdf + (b"\x00" if len(pdf) % 2 else b"")
    ds.EncapsulatedDocumentLength = len(pdf)
    # SOP Common
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
    return ds


def _reference(image: Dataset) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = image.SOPClassUID
    item.ReferencedSOPInstanceUID = image.SOPInstanceUID
    return item


def predecessor_documents(documents: Sequence[Dataset]) -> DicomSequence:
    """Hierarchical SOP Instance Reference items (study → series → instance) for ``documents``."""
    studies: dict[str, dict[str, list[Dataset]]] = {}
    for document in documents:
        series = studies.setdefault(str(document.StudyInstanceUID), {})
        series.setdefault(str(document.SeriesInstanceUID), []).append(_reference(document))
    out = []
    for study_uid, by_series in studies.items():
        study = Dataset()
        study.StudyInstanceUID = study_uid
        items = []
        for series_uid, references in by_series.items():
            item = Dataset()
            item.SeriesInstanceUID = series_uid
            item.ReferencedSOPSequence = DicomSequence(references)
            items.append(item)
        study.ReferencedSeriesSequence = DicomSequence(items)
        out.append(study)
    return DicomSequence(out)
