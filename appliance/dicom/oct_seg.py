"""The retina and fluid of one measured OCT volume as a DICOM Segmentation (highdicom).

Why this SOP class: Segmentation Storage (1.2.840.10008.5.1.4.1.1.66.4, IOD PS3.3 A.51) is
the standard's object for per-pixel results on another image's frames: each frame names the
OPT frame (B-scan) it was derived from (Derivation Image, Source Image) and its plane position
in the OPT's Frame of Reference, so a viewer overlays it on the B-scans. The OCT B-scan Volume
Analysis IOD is the OCT device's own angiography product (README "DICOM objects the appliance
makes"); the Ophthalmic Thickness Map (``thickness_map.py``) is en face. dciodvfy (dicom3tools
1.00~20220618) knows this IOD and finds no error and no warning in what is built here.

What it holds: two BINARY segments on the OPT's own grid (rows x A-scans per B-scan), made
from the stored per-B-scan layers (``pipeline/oct.py`` ``OctLayers``: ILM and RPE rows and the
fluid mask at the measured, binned resolution with whole binning factors). Each binned pixel
stands for the ``row_factor`` x ``ascan_factor`` block of OPT pixels it was averaged from
(``inference/oct/prepare.py``: the even cut of rows / A-scans left over at the edges belongs to
no block and is never segmented), so the masks are the stored layers scaled back exactly, with
no precision added:

1. "retina (ILM to RPE)": binned row ``r`` of A-scan ``a`` lies in the retina when
   ``ilm[a] <= r < rpe[a]`` (the boundaries' row convention, ``inference/oct/segment.py``);
   NaN boundaries (not found) give none. Fluid pixels are segment 2, not 1: the segments do
   not overlap, and the retina between the ILM and the RPE is the two together.
2. "fluid": the stored fluid mask (intraretinal and subretinal alike: the detector does not
   tell them apart).

Keeping the segments apart lets highdicom take one label array (frames x rows x A-scans, 8
bits) instead of a 4-D stack whose overlap check sums 8 bytes a pixel: about 100 MB traced at
the peak instead of about 810 MB for a 128 x 1024 x 512 volume. B-scans with no pixel in a
segment have no frame for it (highdicom's ``omit_empty_frames``). Size (Explicit VR Little
Endian, one bit a pixel; highdicom allows no compressed transfer syntax for BINARY): 59 frames,
1.9 MB for a 49 x 496 x 512 volume with fluid in 10 B-scans; 156 frames, 10.3 MB for 128 x
1024 x 512 with fluid in 28; at most 2 x B-scans x rows x A-scans / 8 bytes plus the header.

Codes (PS3.16, checked against the DICOM terminology of 2026-03: CID 7150 Segmentation
Property Category, CID 7151 Segmentation Property Type and the CIDs it includes): retina:
category (91723000, SCT, "Anatomical Structure"), type (5665001, SCT, "Retina") (CID 4209 /
4211 "Ophthalmic (OCT) Anatomic Structure Imaged"; CID 7151 is extensible) with the eye as the
type's modifier, nested in its item (CID 244: 24028007 Right / 7771000 Left; General Series
Laterality is not allowed here: dciodvfy, Type 2C); fluid: category (91720002, SCT, "Body
Substance"), type (32457005, SCT, "Body fluid") (CID 7197, included in CID 7151), anatomic
region Retina. Algorithm (CID 7162 Surface Processing Algorithm
Family): the classical baseline's ILM/RPE paths are an edge detection (123103, DCM), its fluid
a dark-pocket threshold with a morphological opening (123104, DCM, "Morphological
Operations"); segment algorithm type AUTOMATIC. "demonstration, not clinically validated" is
in the Series Description and the Content Description.

Deterministic: the caller derives the UIDs (series, instance, dimension organisation) from the
OPT and gives the creation time (``created``: Content, Instance Creation and highdicom's own
Contribution Date / Time), so a rebuild is the same object to the byte.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.valuerep import DA, TM

SEGMENTATION = "1.2.840.10008.5.1.4.1.1.66.4"
SERIES_NUMBER = 911
SERIES_DESCRIPTION = "OCT retina and fluid (demonstration, not clinically validated)"
CONTENT_DESCRIPTION = "demonstration, not clinically validated"
CONTENT_LABEL = "RETINA_FLUID"
RETINA, FLUID = 1, 2  # segment numbers (and the label array's values)
RETINA_LABEL = "retina (ILM to RPE)"
FLUID_LABEL = "fluid"
RETINA_TEXT = (
    "Retina from the ILM to the RPE; fluid pockets in it are segment 2, so the retina between "
    "the ILM and the RPE is segments 1 and 2 together"
)
FLUID_TEXT = "Fluid (intraretinal and subretinal alike) as the appliance's OCT analysis found it"
# PS3.16 codes (module docstring)
ANATOMICAL_STRUCTURE = ("91723000", "SCT", "Anatomical Structure")
BODY_SUBSTANCE = ("91720002", "SCT", "Body Substance")
RETINA_CODE = ("5665001", "SCT", "Retina")
BODY_FLUID = ("32457005", "SCT", "Body fluid")
LATERALITY = {"R": ("24028007", "SCT", "Right"), "L": ("7771000", "SCT", "Left")}
EDGE_DETECTION = ("123103", "DCM", "Edge Detection")
MORPHOLOGICAL_OPERATIONS = ("123104", "DCM", "Morphological Operations")
ARTIFICIAL_INTELLIGENCE = ("123110", "DCM", "Artificial Intelligence")
PROCESSING_EQUIPMENT = "109102"  # DCM "Processing Equipment": highdicom names itself so


class NoGeometry(ValueError):
    """The OPT does not place its B-scans (Frame of Reference, pixel spacing, orientation,
    each frame's position): a Segmentation of it cannot be made."""


@dataclass(frozen=True)
class Algorithm:
    """Who made a segment: name and version (LO, 64 characters each), CID 7162 family."""

    name: str
    version: str
    family: tuple[str, str, str]  # code value, scheme, meaning


def label_volume(
    ilm_px: np.ndarray,
    rpe_px: np.ndarray,
    fluid: np.ndarray,
    *,
    row_factor: int,
    ascan_factor: int,
    frames: int,
    rows: int,
    columns: int,
) -> np.ndarray:
    """The segments on the OPT's grid, uint8 (frames, rows, columns): 0 none, ``RETINA``,
    ``FLUID``. ``ilm_px`` / ``rpe_px``: (frames, binned A-scans) binned rows, NaN where not
    found; ``fluid``: bool (frames, binned rows, binned A-scans)."""
    ilm, rpe = np.asarray(ilm_px, np.float32), np.asarray(rpe_px, np.float32)
    mask = np.asarray(fluid, bool)
    if row_factor < 1 or ascan_factor < 1:
        raise ValueError(
            f"binning factors must be whole and >= 1, got {row_factor}, {ascan_factor}"
        )
    if mask.ndim != 3 or ilm.shape != rpe.shape or ilm.shape != (mask.shape[0], mask.shape[2]):
        raise ValueError(f"layers disagree: ILM {ilm.shape}, RPE {rpe.shape}, fluid {mask.shape}")
    binned_rows, binned_ascans = mask.shape[1:]
    height, width = binned_rows * row_factor, binned_ascans * ascan_factor
    if mask.shape[0] != frames or height > rows or width > columns:
        raise ValueError(
            f"layers of {mask.shape} x ({row_factor}, {ascan_factor}) do not fit the OPT's "
            f"{frames} frames of {rows} x {columns}"
        )
    top, left = (rows - height) // 2, (columns - width) // 2  # prepare.bin_volume's even cut
    out = np.zeros((frames, rows, columns), np.uint8)
    depth = np.arange(binned_rows, dtype=np.float32)[:, None]
    for index in range(frames):
        with np.errstate(invalid="ignore"):
            band = (depth >= ilm[index][None, :]) & (depth < rpe[index][None, :])
        small = np.where(mask[index], FLUID, np.where(band, RETINA, 0)).astype(np.uint8)
        block = np.repeat(np.repeat(small, row_factor, axis=0), ascan_factor, axis=1)
        out[index, top : top + height, left : left + width] = block
    return out


def _numbers(values: object, count: int, what: str) -> list[float]:
    try:
        numbers = [float(v) for v in values]  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        raise NoGeometry(f"the OPT's {what} is not {count} numbers") from None
    if len(numbers) != count or not all(math.isfinite(v) for v in numbers):
        raise NoGeometry(f"the OPT's {what} is not {count} finite numbers: {numbers!r}")
    return numbers


def _group(frame: Dataset | None, shared: Dataset | None, sequence: str) -> Dataset:
    """A functional group's item: the frame's own, else the shared one."""
    for groups in (frame, shared):
        if groups is not None and sequence in groups and len(groups[sequence].value) > 0:
            return groups[sequence][0]
    raise NoGeometry(f"the OPT has no {sequence}")


def spatial_source(source: Dataset) -> Dataset:
    """What highdicom reads from the OPT, rebuilt from checked values: ``source``'s top-level
    attributes (its defensively read header, ``pipeline/headers.py``) and, from its functional
    groups, only the pixel spacing, slice thickness, orientation and each frame's position."""
    frames = int(source.get("NumberOfFrames") or 0)
    if not source.get("FrameOfReferenceUID") or frames < 1:
        raise NoGeometry("the OPT has no Frame of Reference UID or no frames")
    shared_items = source.get("SharedFunctionalGroupsSequence") or [None]
    per_frame = list(source.get("PerFrameFunctionalGroupsSequence") or [])
    if len(per_frame) not in (0, frames):
        raise NoGeometry(f"the OPT has {len(per_frame)} per-frame groups for {frames} frames")
    first = per_frame[0] if per_frame else None
    measures = _group(first, shared_items[0], "PixelMeasuresSequence")
    spacing = _numbers(measures.get("PixelSpacing") or (), 2, "Pixel Spacing")
    thickness = measures.get("SliceThickness")
    orientation = _numbers(
        _group(first, shared_items[0], "PlaneOrientationSequence").get("ImageOrientationPatient")
        or (),
        6,
        "Image Orientation (Patient)",
    )
    out = Dataset()
    for element in source:
        if element.VR != "SQ" and element.tag.group != 0x7FE0:  # no sequences, no pixels
            out.add(element)
    shared = Dataset()
    shared.PixelMeasuresSequence = hd.PixelMeasuresSequence(
        spacing, _numbers([thickness], 1, "Slice Thickness")[0] if thickness else None
    )
    shared.PlaneOrientationSequence = hd.PlaneOrientationSequence("PATIENT", orientation)
    out.SharedFunctionalGroupsSequence = DicomSequence([shared])
    items = []
    for index in range(frames):
        groups = per_frame[index] if per_frame else None
        position = _group(groups, shared_items[0], "PlanePositionSequence")
        item = Dataset()
        item.PlanePositionSequence = hd.PlanePositionSequence(
            "PATIENT",
            _numbers(position.get("ImagePositionPatient") or (), 3, "Image Position (Patient)"),
        )
        items.append(item)
    out.PerFrameFunctionalGroupsSequence = DicomSequence(items)
    return out


def _concept(code: tuple[str, str, str]) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(*code)  # a fresh item each time: items are edited below


def _segments(
    laterality: str, retina: Algorithm, fluid: Algorithm
) -> list[hd.seg.SegmentDescription]:
    out = []
    for number, label, category, kind, made_by, text in (
        (RETINA, RETINA_LABEL, ANATOMICAL_STRUCTURE, RETINA_CODE, retina, RETINA_TEXT),
        (FLUID, FLUID_LABEL, BODY_SUBSTANCE, BODY_FLUID, fluid, FLUID_TEXT),
    ):
        algorithm = hd.AlgorithmIdentificationSequence(
            name=made_by.name[:64],
            family=_concept(made_by.family),
            version=made_by.version[:64] or "unknown",
        )
        segment = hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=label,
            segmented_property_category=_concept(category),
            segmented_property_type=_concept(kind),
            algorithm_type="AUTOMATIC",
            algorithm_identification=algorithm,
            anatomic_regions=[_concept(RETINA_CODE)] if number == FLUID else None,
        )
        segment.SegmentDescription = text
        if number == RETINA:  # the eye: the type's modifier (PS3.3 Table 10-23, CID 244)
            modifier = _concept(LATERALITY[laterality])
            segment.SegmentedPropertyTypeCodeSequence[
                0
            ].SegmentedPropertyTypeModifierCodeSequence = DicomSequence([modifier])
        out.append(segment)
    return out


def segmentation_dataset(
    labels: np.ndarray,
    *,
    source: Dataset,
    laterality: str,
    retina_algorithm: Algorithm,
    fluid_algorithm: Algorithm,
    device: Mapping[str, str],
    series_instance_uid: str,
    sop_instance_uid: str,
    dimension_organization_uid: str,
    created: datetime,
) -> hd.seg.Segmentation:
    """The Segmentation of one OCT volume (see the module docstring).

    ``labels``: :func:`label_volume`'s array on the OPT's grid; ``source``: the OPT's header
    with its Frame of Reference UID and functional groups (:func:`spatial_source` keeps only
    the geometry; :class:`NoGeometry` when it has none); ``laterality``: "R" or "L";
    ``device``: the appliance (``manufacturer``, ``model``, ``serial``, ``version``);
    ``created``: when the content was made (Content and Instance Creation Date / Time)."""
    if laterality not in LATERALITY:
        raise ValueError(f"the segmentation needs the eye (R or L), got {laterality!r}")
    frames = int(source.get("NumberOfFrames") or 0)
    shape = (frames, int(source.get("Rows") or 0), int(source.get("Columns") or 0))
    if labels.dtype != np.uint8 or labels.shape != shape:
        raise ValueError(f"labels must be uint8 {shape} (the OPT's grid), got {labels.dtype} "
                         f"{labels.shape}")  # fmt: skip
    if not labels.any():
        raise ValueError("nothing is segmented: no retina and no fluid in any B-scan")
    seg = hd.seg.Segmentation(
        source_images=[spatial_source(source)],
        pixel_array=labels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=_segments(laterality, retina_algorithm, fluid_algorithm),
        series_instance_uid=series_instance_uid,
        series_number=SERIES_NUMBER,
        sop_instance_uid=sop_instance_uid,
        instance_number=1,
        manufacturer=device.get("manufacturer") or "Demonstration",
        manufacturer_model_name=device.get("model") or "retina-appliance",
        software_versions=device.get("version") or "unknown",
        device_serial_number=device.get("serial") or "unknown",
        content_description=CONTENT_DESCRIPTION,
        content_label=CONTENT_LABEL,
        omit_empty_frames=True,
    )
    seg.SeriesDescription = SERIES_DESCRIPTION
    date, time = DA(created.strftime("%Y%m%d")), TM(created.strftime("%H%M%S"))
    seg.ContentDate, seg.ContentTime = date, time
    seg.InstanceCreationDate, seg.InstanceCreationTime = date, time
    for item in (*seg.DimensionOrganizationSequence, *seg.DimensionIndexSequence):
        item.DimensionOrganizationUID = dimension_organization_uid
    for equipment in seg.get("ContributingEquipmentSequence") or []:
        purpose = equipment.get("PurposeOfReferenceCodeSequence") or [Dataset()]
        if purpose[0].get("CodeValue") == PROCESSING_EQUIPMENT:  # highdicom itself, made now
            equipment.ContributionDateTime = created.strftime("%Y%m%d%H%M%S")
    return seg
