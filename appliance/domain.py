"""Small frozen records that stages hand to each other.

This module imports nothing from ``appliance``: every stage may import it, and it is the
only thing stages share. The pipeline is the one place that moves these between stages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Source(StrEnum):
    """How an image reached the appliance."""

    DICOM = "dicom"  # C-STORE from the camera
    HOTFOLDER = "hotfolder"  # a file the camera exported into the inbox
    UPLOAD = "upload"  # POST /api/captures


class CaptureStatus(StrEnum):
    RECEIVED = "received"  # stored and audited, waiting for the pipeline
    PROCESSED = "processed"  # the pipeline stored its results
    FAILED = "failed"  # the stored file could not be analysed (reason kept on the row)


@dataclass(frozen=True)
class PatientInfo:
    """Identity as given by the worklist, the DICOM header or a sidecar file."""

    patient_id: str = ""
    patient_name: str = ""
    birth_date: str = ""  # DICOM DA, YYYYMMDD
    sex: str = ""  # M, F, O or empty
    issuer: str = ""


@dataclass(frozen=True)
class Capture:
    """One stored image: the same record whichever path it arrived by."""

    id: int
    source: Source
    media_type: str  # application/dicom, image/jpeg, image/png, image/tiff
    content_sha256: str
    file_path: str  # relative to the data directory
    size_bytes: int
    received_at: str  # ISO 8601 UTC
    laterality: str | None = None  # "L" / "R" as given by the sender, None when not given
    laterality_source: str | None = None  # "dicom" / "sidecar"
    sop_class_uid: str | None = None
    sop_instance_uid: str | None = None
    study_instance_uid: str | None = None
    patient: PatientInfo = field(default_factory=PatientInfo)
    calling_ae: str | None = None
    duplicate: bool = False  # True when identical content was already stored


@dataclass(frozen=True)
class FieldGeometry:
    """The circular camera field found in an image, in that image's pixel coordinates."""

    cx: float
    cy: float
    radius: float


@dataclass(frozen=True)
class QualityReport:
    """The quality gate's verdict on one image.

    ``reasons`` are machine codes (``out_of_focus``, ``too_dark`` ...); ``guidance`` holds the
    plain-words retake advice for each reason, in the same order.
    """

    gradable: bool
    score: float
    reasons: tuple[str, ...] = ()
    guidance: tuple[str, ...] = ()
    metrics: dict[str, float] = field(default_factory=dict)
    field_geometry: FieldGeometry | None = None
