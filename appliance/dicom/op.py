"""Ophthalmic Photography 8 Bit Image objects from camera JPEGs (wrapped, not re-encoded).

The JPEG bitstream goes into encapsulated Pixel Data unchanged (JPEG Baseline transfer
syntax, YBR_FULL_422, Lossy Image Compression 01 with ratio and method), with every module
PS3.3 A.39 requires; the result passes ``dciodvfy`` with zero errors (tests/dicom). The worklist
step's Accession Number and Request Attributes Sequence (General Series, PS3.3 C.7.3.1) are
copied in when the photograph was taken for a scheduled step.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    generate_uid,
)

from appliance.domain import PatientInfo

OP_8BIT = "1.2.840.10008.5.1.4.1.1.77.1.5.1"
UTC_SYNCHRONIZATION_FRAME = "1.2.840.10008.15.1.1"
# Request Attributes Macro (PS3.3 Table 10-9): the text attributes a worklist step carries.
REQUEST_ATTRIBUTES = (
    "RequestedProcedureID",
    "AccessionNumber",
    "RequestedProcedureDescription",
    "ScheduledProcedureStepID",
    "ScheduledProcedureStepDescription",
)


# Patient + General Study attributes that objects derived from an image (SR, PDF, SC) copy.
STUDY_IDENTITY = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "RequestAttributesSequence",
)
_STUDY_TYPE2 = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
    "ReferringPhysicianName", "StudyID", "AccessionNumber",
)  # fmt: skip


def derived_dataset(source: Dataset, sop_class_uid: str, sop_instance_uid: str) -> Dataset:
    """A new object made from ``source`` (the PDF report, a thickness map): File Meta (Explicit
    VR Little Endian), its SOP Class / Instance UIDs, ``source``'s character set, and Patient +
    General Study copied from ``source`` (:data:`STUDY_IDENTITY`; a Type 2 attribute the source
    lacks is written empty)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class_uid)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = source.get("SpecificCharacterSet", "ISO_IR 192")
    for keyword in STUDY_IDENTITY:
        if keyword in source:
            ds[keyword] = source[keyword]
    for keyword in _STUDY_TYPE2:
        if keyword not in ds:
            setattr(ds, keyword, "")
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = sop_instance_uid
    return ds


@dataclass(frozen=True)
class OPParameters:
    laterality: str  # "L" or "R"
    patient: PatientInfo
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    uid_root: str = "2.25."
    accession_number: str = ""
    manufacturer: str = "Demonstration"
    field: str | None = None  # "macula" / "disc" → Relative Image Position
    acquired: datetime | None = None
    request_attributes: Sequence[Mapping[str, str]] = ()  # items keyed by REQUEST_ATTRIBUTES


def request_attributes_sequence(items: Sequence[Mapping[str, str]]) -> DicomSequence:
    """Request Attributes Sequence items; keys outside the macro and empty values are left out.

    An item without a Requested Procedure ID or Scheduled Procedure Step ID (Type 1C: required
    when the procedure was scheduled) describes no scheduled step and is dropped.
    """
    out = []
    for given in items:
        unknown = sorted(set(given) - set(REQUEST_ATTRIBUTES))
        if unknown:
            raise ValueError(f"not Request Attributes Macro keywords: {', '.join(unknown)}")
        stripped = {k: str(given.get(k) or "").strip() for k in REQUEST_ATTRIBUTES}
        values = {k: v for k, v in stripped.items() if v}
        if not (values.get("RequestedProcedureID") and values.get("ScheduledProcedureStepID")):
            continue
        item = Dataset()
        for keyword, value in values.items():
            setattr(item, keyword, value)
        out.append(item)
    return DicomSequence(out)


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def op_from_jpeg(jpeg: bytes, params: OPParameters) -> Dataset:
    """A camera JPEG wrapped unchanged (JPEG Baseline transfer syntax, lossy ``01``)."""
    with Image.open(io.BytesIO(jpeg), formats=["JPEG"]) as img:
        width, height = img.size
        channels = len(img.getbands())
    ds = _op_dataset(params, JPEGBaseline8Bit, channels)
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionRatio = f"{(width * height * channels) / len(jpeg):.4f}"[:16]
    ds.LossyImageCompressionMethod = "ISO_10918_1"
    ds.PhotometricInterpretation = "YBR_FULL_422" if channels == 3 else "MONOCHROME2"
    ds.Rows, ds.Columns = height, width
    ds.PixelData = encapsulate([jpeg])
    ds["PixelData"].VR = "OB"
    return _ocular(ds, params)


def op_from_image(data: bytes, params: OPParameters) -> Dataset:
    """A PNG or TIFF photograph, kept lossless: its 8-bit pixels, uncompressed.

    Colour (RGB, palette, RGBA: the alpha channel is dropped) becomes RGB, grey stays
    MONOCHROME2. Images with more than 8 bits per sample are refused (ValueError): the
    8-bit OP object could not hold them without loss.
    """
    with Image.open(io.BytesIO(data), formats=["PNG", "TIFF"]) as img:
        if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
            raise ValueError(f"{img.mode} images have more than 8 bits per sample")
        eight_bit = img.convert("L" if img.mode in ("L", "1") else "RGB")
        pixels = np.asarray(eight_bit, dtype=np.uint8)
    channels = 1 if pixels.ndim == 2 else 3
    ds = _op_dataset(params, ExplicitVRLittleEndian, channels)
    ds.LossyImageCompression = "00"
    ds.PhotometricInterpretation = "RGB" if channels == 3 else "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.PixelData = pixels.tobytes()
    ds["PixelData"].VR = "OB"
    return _ocular(ds, params)


def _op_dataset(params: OPParameters, transfer_syntax: str, channels: int) -> Dataset:
    """Every OP module except the pixels and the Ocular Region Imaged."""
    if params.laterality not in ("L", "R"):
        raise ValueError("laterality must be 'L' or 'R'")
    when = params.acquired or datetime.now(UTC)
    date, time = when.strftime("%Y%m%d"), when.strftime("%H%M%S")

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(OP_8BIT)
    meta.MediaStorageSOPInstanceUID = UID(params.sop_instance_uid)
    meta.TransferSyntaxUID = UID(transfer_syntax)
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 192"
    # Patient
    ds.PatientName = params.patient.patient_name
    ds.PatientID = params.patient.patient_id
    ds.PatientBirthDate = params.patient.birth_date
    ds.PatientSex = params.patient.sex
    if params.patient.issuer:
        ds.IssuerOfPatientID = params.patient.issuer
    # General Study
    ds.StudyInstanceUID = params.study_instance_uid
    ds.StudyDate, ds.StudyTime = date, time
    ds.ReferringPhysicianName = ""
    ds.StudyID = ""
    ds.AccessionNumber = params.accession_number
    # General Series + Ophthalmic Photography Series
    ds.Modality = "OP"
    ds.SeriesInstanceUID = params.series_instance_uid
    ds.SeriesNumber = 1
    requests = request_attributes_sequence(params.request_attributes)
    if requests:
        ds.RequestAttributesSequence = requests
    # Synchronization (required for OP)
    ds.SynchronizationFrameOfReferenceUID = UTC_SYNCHRONIZATION_FRAME
    ds.SynchronizationTrigger = "NO TRIGGER"
    ds.AcquisitionTimeSynchronized = "N"
    # General Equipment
    ds.Manufacturer = params.manufacturer
    # General Image + OP Image
    ds.InstanceNumber = 1
    ds.PatientOrientation = ""
    ds.ContentDate, ds.ContentTime = date, time
    ds.AcquisitionDateTime = date + time
    ds.ImageType = ["ORIGINAL", "PRIMARY", "", "COLOR" if channels == 3 else "REDFREE"]
    ds.BurnedInAnnotation = "NO"
    # Image Pixel + Multi-frame
    ds.SamplesPerPixel = channels
    if channels == 3:
        ds.PlanarConfiguration = 0
    else:
        ds.PresentationLUTShape = "IDENTITY"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelRepresentation = 0
    ds.NumberOfFrames = 1
    ds.FrameIncrementPointer = 0x00181063  # Frame Time
    ds.FrameTime = 0
    return ds


def _ocular(ds: Dataset, params: OPParameters) -> Dataset:
    # Ocular Region Imaged
    ds.ImageLaterality = params.laterality
    ds.AnatomicRegionSequence = DicomSequence([_code("5665001", "SCT", "Retina")])
    if params.field == "macula":
        ds.RelativeImagePositionCodeSequence = DicomSequence(
            [_code("111900", "DCM", "Macula centered")]
        )
    elif params.field == "disc":
        ds.RelativeImagePositionCodeSequence = DicomSequence(
            [_code("111901", "DCM", "Disc centered")]
        )
    # OP Acquisition Parameters (Type 2: present, may be empty)
    ds.PatientEyeMovementCommanded = ""
    ds.HorizontalFieldOfView = None
    ds.RefractiveStateSequence = DicomSequence()
    ds.EmmetropicMagnification = None
    ds.IntraOcularPressure = None
    ds.PupilDilated = ""
    # OP Photographic Parameters
    ds.AcquisitionDeviceTypeCodeSequence = DicomSequence(
        [_code("409898007", "SCT", "Fundus Camera")]
    )
    ds.IlluminationTypeCodeSequence = DicomSequence()
    ds.LightPathFilterTypeStackCodeSequence = DicomSequence()
    ds.ImagePathFilterTypeStackCodeSequence = DicomSequence()
    ds.LensesCodeSequence = DicomSequence()
    ds.DetectorType = "CMOS"
    # SOP Common
    ds.SOPClassUID = OP_8BIT
    ds.SOPInstanceUID = params.sop_instance_uid
    ds.InstanceCreationDate, ds.InstanceCreationTime = (
        datetime.now(UTC).strftime("%Y%m%d"),
        datetime.now(UTC).strftime("%H%M%S"),
    )
    return ds


def to_bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def new_uid(root: str = "2.25.") -> str:
    return str(generate_uid(prefix=None if root == "2.25." else root))


def derived_uid(root: str, *parts: str) -> str:
    """A UID that is the same for the same ``parts``: under ``root``, or 2.25 from a hash."""
    if root == "2.25.":
        digest = hashlib.sha256("\\".join(parts).encode()).digest()[:16]
        return f"2.25.{int.from_bytes(digest, 'big')}"
    return str(generate_uid(prefix=root, entropy_srcs=list(parts)))
