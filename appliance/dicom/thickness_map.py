"""The retinal thickness map of one macular OCT volume as an Ophthalmic Thickness Map object.

Why this SOP class: Ophthalmic Thickness Map Storage (1.2.840.10008.5.1.4.1.1.81.1; PS3.4
Annex B, IOD PS3.3 A.67) is the standard's object for exactly this: a thickness map from an
OCT (or polarimetry / SLO tomography) device, one value per en-face location, mapped to
micrometres by a Real World Value Mapping, naming the OCT it was measured on. OCT consoles
export their macular thickness maps as this class, so ophthalmic archives and viewers that read
OPT read it; a general archive stores it as an ordinary image (Orthanc accepts it:
tests/dicom/test_thickness_map.py). The alternatives fit worse: Ophthalmic Optical Coherence
Tomography En Face Image (…77.1.5.7) is a reflectivity/flow projection of a slab, not a
measurement, and B-scan Volume Analysis (…77.1.5.8) is per B-scan, not en face; a Parametric
Map or Secondary Capture would drop the ophthalmic meaning (thickness definition, map type).

Validation: the dicom3tools on this appliance's build machines (1.00~20220618, Debian
bookworm) has no Ophthalmic Thickness Map IOD, so ``dciodvfy`` checks every attribute's VR,
VM and encoding but answers "Information Object Not found"; the test asserts that is its only
error and checks the modules below (PS3.3 A.67.3) itself.

What it holds: Patient, General Study (copied from the source OPT); General Series +
Ophthalmic Thickness Map Series (Modality OPM, Laterality); General Equipment + Enhanced General
Equipment (the appliance; the OCT device in Contributing Equipment); General Image (DERIVED,
Source Image Sequence = the OPT, Derivation Description "demonstration model, not clinically
validated"); Image Pixel: one frame, MONOCHROME2, 16-bit unsigned values in tenths of a
micrometre, rows = the volume's B-scans (row 0 the first, superior one), columns = A-scans,
Pixel Spacing = (between B-scans, between A-scans) mm with its Pixel Aspect Ratio, places not
measured (NaN, e.g. a blank B-scan) = 65535 = Pixel Padding Value, outside the mapped range;
Ophthalmic Thickness Map: device type OCT, acquisition method (111921, DCM, "Spectral domain")
(CID 4261), map type (111930, DCM, "Absolute ophthalmic thickness") (CID 4263), retinal
thickness definition (111928, DCM, "Total retinal thickness (ILM to RPE)") (CID 4262), Real
World Value Mapping slope 0.1 intercept 0 unit (um, UCUM, "micrometer") (CID 4260), anatomic
region (81745001, SCT, "Eye") with the laterality modifier; OP Acquisition Parameters (copied
from the OPT where it has them, else empty: all Type 2); Acquisition Context (empty); SOP
Common; Frame of Reference UID of the OPT. Codes as listed in PS3.16 (checked against
pydicom 3.0's PS3.16 concept table: CID 4260-4263).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

from appliance.dicom.op import derived_dataset
from appliance.domain import OctFinding

OPHTHALMIC_THICKNESS_MAP = "1.2.840.10008.5.1.4.1.1.81.1"
UM_PER_VALUE = 0.1  # a stored value is tenths of a micrometre
NOT_MEASURED = 65535  # stored where the map is NaN
MAX_VALUE = NOT_MEASURED - 1
MANUFACTURER = "Demonstration"
DERIVATION = "Retinal thickness ILM to RPE; demonstration model, not clinically validated"
# PS3.16 codes (CID 4261, 4263, 4262, 4260; SCT region and laterality as in codes.py)
SPECTRAL_DOMAIN = ("111921", "DCM", "Spectral domain")
ABSOLUTE_THICKNESS = ("111930", "DCM", "Absolute ophthalmic thickness")
ILM_TO_RPE = ("111928", "DCM", "Total retinal thickness (ILM to RPE)")
MICROMETER = ("um", "UCUM", "micrometer")
EYE = ("81745001", "SCT", "Eye")
LATERALITY = {"R": ("24028007", "SCT", "Right"), "L": ("7771000", "SCT", "Left")}
OP_ACQUISITION = (
    "PatientEyeMovementCommanded",
    "HorizontalFieldOfView",
    "RefractiveStateSequence",
    "EmmetropicMagnification",
    "IntraOcularPressure",
    "PupilDilated",
)


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _seq(*items: Dataset) -> DicomSequence:
    return DicomSequence(list(items))


def _reference(source: Dataset) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = source.SOPClassUID
    item.ReferencedSOPInstanceUID = source.SOPInstanceUID
    return item


def encode_thickness(thickness_um: np.ndarray) -> np.ndarray:
    """µm (float, NaN where not measured) → stored uint16 (tenths of a µm, ``NOT_MEASURED``)."""
    values = np.asarray(thickness_um, dtype=np.float64)
    if values.ndim != 2 or 0 in values.shape:
        raise ValueError(f"the thickness map must be 2-D (B-scans, A-scans), got {values.shape}")
    finite = np.isfinite(values)
    if np.any(values[finite] < 0):
        raise ValueError("thickness values must not be negative")
    stored = np.full(values.shape, NOT_MEASURED, dtype=np.uint16)
    stored[finite] = np.clip(np.rint(values[finite] / UM_PER_VALUE), 0, MAX_VALUE)
    return stored


def decode_thickness(ds: Dataset) -> np.ndarray:
    """The map back in µm (NaN where not measured), through its Real World Value Mapping."""
    mapping = ds.RealWorldValueMappingSequence[0]
    stored = ds.pixel_array.astype(np.float64)
    um = stored * float(mapping.RealWorldValueSlope) + float(mapping.RealWorldValueIntercept)
    um[stored == NOT_MEASURED] = np.nan
    return um


def thickness_map_dataset(
    thickness_um: np.ndarray,
    *,
    spacing_mm: tuple[float, float],
    finding: OctFinding,
    source: Dataset,
    device: Mapping[str, str],
    series_instance_uid: str,
    sop_instance_uid: str,
    instance_number: int = 1,
) -> Dataset:
    """The Ophthalmic Thickness Map of one OCT volume (see the module docstring).

    ``thickness_um``: (B-scans, A-scans) ILM-RPE thickness in µm, NaN where not measured (the
    measurement's ``thickness_um``); ``spacing_mm``: (between B-scans, between A-scans) in mm;
    ``finding``: the volume's ``OctFinding`` (its laterality; the OPT's ImageLaterality when
    None); ``source``: the OPT dataset it was measured on (its header is enough); ``device``:
    the appliance (``manufacturer``, ``model``, ``serial``, ``version``)."""
    if len(spacing_mm) != 2 or not all(float(s) > 0 for s in spacing_mm):
        raise ValueError(f"spacing_mm must be two positive numbers, got {spacing_mm!r}")
    laterality = finding.laterality or source.get("ImageLaterality")
    if laterality not in ("R", "L"):
        raise ValueError(f"the map needs the eye (R or L), got {laterality!r}")
    stored = encode_thickness(thickness_um)
    now = datetime.now(UTC)
    ds = _identity(source, sop_instance_uid)
    _series(ds, source, series_instance_uid, laterality)
    _equipment(ds, source, device)
    _image(ds, stored, spacing_mm, source, now, instance_number)
    _map_module(ds, laterality)
    _acquisition(ds, source)
    ds.InstanceCreationDate = now.strftime("%Y%m%d")
    ds.InstanceCreationTime = now.strftime("%H%M%S")
    return ds


def _identity(source: Dataset, sop_instance_uid: str) -> Dataset:
    """File meta, SOP Common, Patient and General Study (copied from the OPT)."""
    return derived_dataset(source, OPHTHALMIC_THICKNESS_MAP, sop_instance_uid)


def _series(ds: Dataset, source: Dataset, series_instance_uid: str, laterality: str) -> None:
    """General Series + Ophthalmic Thickness Map Series; the OPT's frame of reference."""
    ds.Modality = "OPM"
    ds.SeriesInstanceUID = series_instance_uid
    ds.SeriesNumber = 910
    ds.SeriesDescription = "OCT retinal thickness map (demonstration)"
    ds.Laterality = laterality
    if "FrameOfReferenceUID" in source:
        ds.FrameOfReferenceUID = source.FrameOfReferenceUID


def _equipment(ds: Dataset, source: Dataset, device: Mapping[str, str]) -> None:
    """General + Enhanced General Equipment: the appliance; the OCT as contributing equipment."""
    ds.Manufacturer = device.get("manufacturer") or MANUFACTURER
    ds.ManufacturerModelName = device.get("model") or "retina-appliance"
    ds.DeviceSerialNumber = device.get("serial") or "unknown"
    ds.SoftwareVersions = device.get("version") or "unknown"
    ds.add_new(0x00280120, "US", NOT_MEASURED)  # Pixel Padding Value
    if not str(source.get("Manufacturer") or "").strip():
        return  # Manufacturer is Type 1 in a Contributing Equipment item
    oct_device = Dataset()
    oct_device.Manufacturer = str(source.Manufacturer)
    if source.get("ManufacturerModelName"):
        oct_device.ManufacturerModelName = source.ManufacturerModelName
    oct_device.PurposeOfReferenceCodeSequence = _seq(
        _code("109101", "DCM", "Acquisition Equipment")
    )
    ds.ContributingEquipmentSequence = _seq(oct_device)


def _image(
    ds: Dataset,
    stored: np.ndarray,
    spacing_mm: tuple[float, float],
    source: Dataset,
    now: datetime,
    instance_number: int,
) -> None:
    """General Image + Image Pixel (and the map module's image attributes)."""
    ds.ImageType = ["DERIVED", "PRIMARY"]
    ds.InstanceNumber = instance_number
    ds.PatientOrientation = ""
    ds.ContentDate, ds.ContentTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.AcquisitionDateTime = _acquired(source) or now.strftime("%Y%m%d%H%M%S")
    ds.BurnedInAnnotation = "NO"
    ds.RecognizableVisualFeatures = "NO"
    ds.LossyImageCompression = "00"
    ds.DerivationDescription = DERIVATION
    ds.SourceImageSequence = _seq(_reference(source))
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = stored.shape
    row_mm, column_mm = float(spacing_mm[0]), float(spacing_mm[1])
    ds.PixelSpacing = [f"{row_mm:.6g}", f"{column_mm:.6g}"]
    ds.PixelAspectRatio = _aspect(row_mm, column_mm)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 0
    ds.PixelData = stored.astype("<u2").tobytes()


def _acquired(source: Dataset) -> str:
    """When the OCT was taken: its Acquisition DateTime, else its content or study date and time."""
    if source.get("AcquisitionDateTime"):
        return str(source.AcquisitionDateTime)
    for date, time in (("ContentDate", "ContentTime"), ("StudyDate", "StudyTime")):
        if source.get(date):
            return str(source.get(date)) + str(source.get(time) or "")
    return ""


def _aspect(row_mm: float, column_mm: float) -> list[int]:
    """Pixel Aspect Ratio (vertical, horizontal) as integers, to 1 part in 1000."""
    vertical, horizontal = round(row_mm / min(row_mm, column_mm) * 1000), 1000
    if row_mm < column_mm:
        vertical, horizontal = 1000, round(column_mm / row_mm * 1000)
    divisor = math.gcd(vertical, horizontal)
    return [vertical // divisor, horizontal // divisor]


def _map_module(ds: Dataset, laterality: str) -> None:
    """Ophthalmic Thickness Map module: device, method, map type, definition, value mapping."""
    ds.OphthalmicMappingDeviceType = "OCT"
    ds.AcquisitionMethodCodeSequence = _seq(_code(*SPECTRAL_DOMAIN))
    ds.OphthalmicThicknessMapTypeCodeSequence = _seq(_code(*ABSOLUTE_THICKNESS))
    ds.RetinalThicknessDefinitionCodeSequence = _seq(_code(*ILM_TO_RPE))
    mapping = Dataset()
    mapping.RealWorldValueFirstValueMapped = 0
    mapping.RealWorldValueLastValueMapped = MAX_VALUE
    mapping.RealWorldValueIntercept = 0
    mapping.RealWorldValueSlope = UM_PER_VALUE
    mapping.LUTExplanation = "Retinal thickness ILM to RPE"
    mapping.LUTLabel = "THICKNESS_UM"
    mapping.MeasurementUnitsCodeSequence = _seq(_code(*MICROMETER))
    ds.RealWorldValueMappingSequence = _seq(mapping)
    region = _code(*EYE)
    region.AnatomicRegionModifierSequence = _seq(_code(*LATERALITY[laterality]))
    ds.AnatomicRegionSequence = _seq(region)


def _acquisition(ds: Dataset, source: Dataset) -> None:
    """OP Acquisition Parameters (all Type 2: the OPT's values where it has them) and
    Acquisition Context (empty)."""
    for keyword in OP_ACQUISITION:
        if keyword in source:
            ds[keyword] = source[keyword]
        elif keyword == "RefractiveStateSequence":
            ds.RefractiveStateSequence = DicomSequence([])
        else:
            setattr(ds, keyword, None)
    ds.AcquisitionContextSequence = DicomSequence([])
