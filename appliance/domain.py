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


@dataclass(frozen=True)
class ImageFinding:
    """What the quality gate and the models found on one photograph, as the outcome stage sees it.

    Model fields are None when no model for that task is installed or the image was not graded.
    """

    capture_id: int | None
    laterality: str | None  # "L" / "R": as given, else as detected from the disc position
    field: str | None  # "macula" / "disc" centred, None when unknown
    gradable: bool
    quality_reasons: tuple[str, ...] = ()
    dr_grade: int | None = None  # ICDR 0-4
    p_referable: float | None = None
    referable: bool | None = None  # moderate NPDR or worse, or DME
    p_dme: float | None = None
    dme: bool | None = None
    cdr: float | None = None
    p_glaucoma: float | None = None
    glaucoma_suspect: bool | None = None
    laterality_mismatch: bool = False
    # Why the models' results were withheld for a person to grade ("out_of_domain",
    # "gradability_model_disagrees", ...); empty when the models' results stand.
    human_grading: tuple[str, ...] = ()


# The ETDRS 9-subfield grid (central 1 mm disc, inner ring 1-3 mm, outer ring 3-6 mm, each ring
# cut into superior / nasal / inferior / temporal quadrants), in the order reports list them.
ETDRS_SUBFIELDS: tuple[str, ...] = (
    "central",
    "inner_superior",
    "inner_nasal",
    "inner_inferior",
    "inner_temporal",
    "outer_superior",
    "outer_nasal",
    "outer_inferior",
    "outer_temporal",
)


@dataclass(frozen=True)
class OctFinding:
    """What the OCT quality check and measurement found in one macular volume, as the outcome
    stage and the DICOM writers see it. Measurements are None when the volume was not measured
    (not gradable, or nothing to measure); a subfield not scanned is None.

    Whether this amounts to centre-involving DME is the outcome rules' decision (the central
    subfield thickness threshold depends on the device), not the measurement's.
    """

    capture_id: int | None
    laterality: str | None  # "L" / "R"
    gradable: bool
    quality_reasons: tuple[str, ...] = ()
    device: str = ""  # "<Manufacturer> <ManufacturerModelName>", as the object names it
    cst_um: float | None = None  # central subfield (1 mm) mean thickness, ILM to RPE/BM
    subfield_um: dict[str, float | None] = field(default_factory=dict)  # ETDRS_SUBFIELDS
    macular_volume_mm3: float | None = None  # within the 6 mm disc
    fovea_mm: tuple[float, float] | None = None  # (x, y) from the scan centre, x to the right
    p_fluid_centre: float | None = None  # fluid within the central subfield
    p_fluid_any: float | None = None
    fluid_volume_mm3: float | None = None
    signal_db: float | None = None
    human_grading: tuple[str, ...] = ()  # why a person must grade it, as for photographs


@dataclass(frozen=True)
class EyeOutcome:
    eye: str  # "L" / "R"
    status: str  # "graded", "ungradable", "missing"
    dr_grade: int | None = None
    referable: bool | None = None
    dme: bool | None = None
    cdr: float | None = None
    glaucoma_suspect: bool | None = None
    capture_ids: tuple[int, ...] = ()  # the photographs counted for this eye
    # The eye's OCT volumes as the rules judged them (None / empty without an OCT): status
    # "graded", "ungradable" or "human_grading"; centre-involving DME; the CST of the volume
    # that decided and the device threshold it was held against. ``dme`` above includes it.
    oct_status: str | None = None
    oct_dme: bool | None = None
    cst_um: float | None = None
    cst_threshold_um: float | None = None
    oct_capture_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class VisitOutcome:
    """The visit's screening decision, in words a patient could understand."""

    code: str  # refer, rescreen, retake, glaucoma_refer, incomplete, no_model
    text: str
    recall_months: int | None
    urgency: str  # routine, soon, urgent
    rule_set: str  # "<name>@<version>"
    complete: bool
    eyes: tuple[EyeOutcome, ...] = ()
    prompts: tuple[str, ...] = ()  # what the operator should do next, one sentence each
