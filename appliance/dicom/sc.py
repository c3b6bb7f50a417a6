"""Heatmap overlays as Secondary Capture Image objects (setting ``heatmap_secondary_capture``).

``heatmap_sc`` builds a Secondary Capture Image (PS3.3 A.8.1, SOP Class 1.2.840.10008.5.1.4.1.1.7)
with highdicom's ``SCImage`` from the RGB overlay the worker saved as PNG, in the patient and
study of the source image (an OP object or the DICOM the camera sent): RGB 8-bit, uncompressed,
so the pixels are exactly the PNG's. Its own series ("AI heatmaps", Modality OT), Conversion
Type WSD, Image Laterality, Burned In Annotation NO, a Derivation Description that says what it
is (a demonstration model's activation map, not for diagnosis) and a Source Image Sequence naming
the photograph. It passes ``dciodvfy`` with zero errors (tests/dicom/test_sc.py).
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
from highdicom.sc import SCImage
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian

from appliance.dicom.op import STUDY_IDENTITY

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
SERIES_DESCRIPTION = "AI heatmaps"
SERIES_NUMBER = 902
DERIVATION = (
    "Class-activation map of a demonstration DR screening model blended over the retinal "
    "photograph; not clinically validated, not for diagnosis"
)
MANUFACTURER = "Demonstration"

# Patient + General Study, copied as they are from the source image (like the PDF report).
_IDENTITY = ("SpecificCharacterSet", *STUDY_IDENTITY)


def heatmap_sc(
    rgb: np.ndarray,
    *,
    source: Dataset,
    series_instance_uid: str,
    sop_instance_uid: str,
    laterality: str | None = None,
    instance_number: int = 1,
    manufacturer: str = MANUFACTURER,
) -> Dataset:
    """The heatmap ``rgb`` (H×W×3 uint8) as a Secondary Capture in the study of ``source``.

    ``laterality`` ("L"/"R"); when not given, the source's Image Laterality is used; an
    unknown eye gets no Image Laterality and an empty Series Laterality rather than a guess.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"heatmap must be H×W×3 uint8 RGB, got {rgb.shape} {rgb.dtype}")
    for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID"):
        if keyword not in source:
            raise ValueError(f"the source image has no {keyword}")
    eye = laterality or str(source.get("ImageLaterality", "") or source.get("Laterality", ""))
    if eye not in ("L", "R", ""):
        raise ValueError(f"laterality must be 'L' or 'R', got {eye!r}")

    ds: Dataset = SCImage(
        pixel_array=np.ascontiguousarray(rgb),
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        study_instance_uid=str(source.StudyInstanceUID),
        series_instance_uid=series_instance_uid,
        series_number=SERIES_NUMBER,
        sop_instance_uid=sop_instance_uid,
        instance_number=instance_number,
        manufacturer=manufacturer,
        patient_orientation=("L", "F"),  # replaced below: the crop's orientation is not claimed
        transfer_syntax_uid=ExplicitVRLittleEndian,
    )
    for keyword in _IDENTITY:
        if keyword in source:
            ds[keyword] = source[keyword]
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate"):
        if keyword not in ds:
            setattr(ds, keyword, "")
    now = datetime.now(UTC)
    # General Series
    ds.SeriesDescription = SERIES_DESCRIPTION  # (Series Laterality: not with Image Laterality)
    # SC Equipment: made on this workstation from an image, not scanned
    ds.ConversionType = "WSD"
    # General Image
    ds.PatientOrientation = ""
    ds.ContentDate, ds.ContentTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.BurnedInAnnotation = "NO"
    ds.RecognizableVisualFeatures = "YES"  # the retina shows through the map
    ds.LossyImageCompression = "00"
    ds.DerivationDescription = DERIVATION
    ds.SourceImageSequence = DicomSequence([_source_item(source)])
    if eye:
        ds.ImageLaterality = eye
    else:
        ds.Laterality = ""  # General Series, Type 2C: empty when no eye is known
    return ds


def _source_item(source: Dataset) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = source.SOPClassUID
    item.ReferencedSOPInstanceUID = source.SOPInstanceUID
    purpose = Dataset()  # CID 7202
    purpose.CodeValue = "121322"
    purpose.CodingSchemeDesignator = "DCM"
    purpose.CodeMeaning = "Source image for image processing operation"
    item.PurposeOfReferenceCodeSequence = DicomSequence([purpose])
    return item
