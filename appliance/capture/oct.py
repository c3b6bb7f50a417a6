"""A stored Ophthalmic Tomography (OPT) object read back as a volume and its geometry.

:func:`read_oct` runs on the pipeline worker, after ingest accepted the object (limits,
codestreams, every frame decoded: ``capture/pixels.py``). It reads defensively: the decoded
volume must fit ``Limits.max_inflated_bytes`` (and ``MAX_MEASURED_BYTES`` to be measured); the
spacing comes from the Pixel Measures functional group (shared or first frame, else the top
level), the distance between B-scans from Spacing Between Slices, else the frames' Plane
Positions, else Slice Thickness; the eye from Image Laterality, else Frame Laterality. What
cannot be measured is said, not raised: :class:`OctVolume` carries ``problem`` (a plain
sentence) and the volume stays stored and is forwarded as received.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pydicom.pixels
from pydicom.dataset import Dataset

from appliance.capture.decode import OPT_SOP_CLASS, read_dicom
from appliance.capture.frames import first as _first
from appliance.capture.frames import frame_items as _frame_items
from appliance.capture.frames import image_eye
from appliance.capture.frames import text as _text
from appliance.capture.frames import value as _value
from appliance.capture.pixels import Limits, check_limits
from appliance.errors import RejectedInput, TooLarge

LOGGER = logging.getLogger(__name__)

MIN_FRAMES = 3
MIN_SIZE = 64  # rows and A-scans
# Plausible geometry for a macular volume (mm): axial pixels 1-20 µm, lateral 1-200 µm,
# B-scan spacing 5 µm - 1 mm; the scan must cover the 1 mm central subfield both ways.
AXIAL_MM = (0.001, 0.02)
LATERAL_MM = (0.001, 0.2)
FRAME_MM = (0.005, 1.0)
MIN_EXTENT_MM = 1.0
MAX_EXTENT_MM = 20.0
# Decoded size measured at most (a 128 x 1024 x 512 volume is 64 MiB at 8 bits); a larger one
# is stored and forwarded but not measured, so the worker stays within the device's memory.
MAX_MEASURED_BYTES = 256 * 1024 * 1024
GREYSCALE = ("MONOCHROME2", "MONOCHROME1")  # Photometric Interpretations measured


@dataclass(frozen=True)
class OctVolume:
    """One OPT object as the measurement needs it. ``problem`` is None when it can be measured;
    otherwise ``volume`` / ``spacing_mm`` may be None and ``problem`` says why in plain words."""

    volume: np.ndarray | None  # uint8 (frames, rows, A-scans)
    spacing_mm: tuple[float, float, float] | None  # (between B-scans, axial, lateral)
    laterality: str | None  # "L" / "R"
    manufacturer: str
    model: str
    problem: str | None = None

    @property
    def device(self) -> str:
        return " ".join(part for part in (self.manufacturer, self.model) if part)


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _numbers(value: Any, count: int) -> tuple[float, ...] | None:
    """Exactly ``count`` finite numbers from a (multi-)valued element, else None."""
    try:
        values = [value] if isinstance(value, str | bytes) else list(value)
    except TypeError:
        values = [value]
    numbers = tuple(_number(v) for v in values)
    if len(numbers) != count or any(n is None for n in numbers):
        return None
    return tuple(float(n) for n in numbers if n is not None)


def _groups(ds: Dataset) -> Iterable[Dataset]:
    """Where per-volume attributes may be: shared groups, the first frame's, the top level."""
    shared = _first(_value(ds, "SharedFunctionalGroupsSequence"))
    first = _first(_value(ds, "PerFrameFunctionalGroupsSequence"))
    return [g for g in (shared, first) if g is not None]


def _measures(ds: Dataset) -> Dataset:
    for group in _groups(ds):
        measures = _first(_value(group, "PixelMeasuresSequence"))
        if measures is not None:
            return measures
    return ds


def _pixel_spacing(ds: Dataset) -> tuple[tuple[float, ...] | None, str | None]:
    """(axial, lateral) in mm from the Pixel Measures (shared, else every frame's; all alike),
    else the top level; or why there is none."""
    measures = _frame_items(ds, "PixelMeasuresSequence")
    given = [value for m in measures if (value := _value(m, "PixelSpacing")) is not None]
    if not given and _value(ds, "PixelSpacing") is not None:
        given = [_value(ds, "PixelSpacing")]
    if not given:
        return None, "the object gives no Pixel Spacing (axial and lateral size of a pixel)"
    spacings = [spacing for value in given if (spacing := _numbers(value, 2)) is not None]
    if len(spacings) != len(given):
        return None, "its Pixel Spacing is not two numbers (axial and lateral size of a pixel)"
    first = spacings[0]
    if any(not np.allclose(spacing, first, rtol=1e-4, atol=0) for spacing in spacings):
        return None, "its B-scans do not all have the same Pixel Spacing"
    return first, None


def _positions(ds: Dataset) -> list[np.ndarray]:
    out = []
    for item in _value(ds, "PerFrameFunctionalGroupsSequence") or []:
        position = _first(_value(item, "PlanePositionSequence"))
        value = _numbers(_value(position, "ImagePositionPatient"), 3) if position else None
        if value is None:
            return []
        out.append(np.array(value))
    return out


def _frame_spacing(ds: Dataset, measures: Dataset, frames: int) -> float | None:
    given = _value(measures, "SpacingBetweenSlices") or _value(ds, "SpacingBetweenSlices")
    spacing = _number(given)
    if spacing:
        return spacing
    positions = _positions(ds)
    if len(positions) == frames and frames > 1:
        return float(np.linalg.norm(positions[-1] - positions[0])) / (frames - 1)
    return _number(_value(measures, "SliceThickness") or _value(ds, "SliceThickness"))


def _geometry(ds: Dataset, frames: int, rows: int, columns: int) -> tuple[Any, str | None]:
    """(spacing, problem): spacing (between B-scans, axial, lateral) or why it is unusable."""
    pixel, problem = _pixel_spacing(ds)
    if pixel is None:
        return None, problem
    axial, lateral = pixel
    frame = _frame_spacing(ds, _measures(ds), frames)
    if frame is None:
        return None, "the object gives no distance between B-scans"
    checks = (
        ("axial pixel size", axial, AXIAL_MM),
        ("lateral pixel size", lateral, LATERAL_MM),
        ("distance between B-scans", frame, FRAME_MM),
    )
    for name, value, (low, high) in checks:
        if not low <= value <= high:
            return None, f"the {name} ({value} mm) is outside {low}-{high} mm"
    width, height = lateral * (columns - 1), frame * (frames - 1)
    for name, extent in (("width", width), ("height", height)):
        if not MIN_EXTENT_MM <= extent <= MAX_EXTENT_MM:
            return None, (
                f"the scan {name} ({extent:.2f} mm) is outside {MIN_EXTENT_MM}-{MAX_EXTENT_MM} mm"
            )
    return (float(frame), float(axial), float(lateral)), None


def _pixels(ds: Dataset, frames: int) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        volume = pydicom.pixels.pixel_array(ds)
    volume = np.asarray(volume)
    if frames == 1:
        volume = volume[None]
    if volume.ndim != 3:
        raise RejectedInput(f"unexpected OCT pixel shape {volume.shape}", reason="bad_pixel_module")
    if volume.dtype != np.uint8:  # to 8 bits: signed values offset to start at 0 first
        stored = min(max(int(_number(_value(ds, "BitsStored")) or 16), 1), 32)
        values = volume.astype(np.int64)
        if int(ds.get("PixelRepresentation") or 0) == 1:
            values += 1 << (stored - 1)
        volume = np.clip(values >> max(stored - 8, 0), 0, 255).astype(np.uint8)
    if _text(ds, "PhotometricInterpretation") == "MONOCHROME1":  # white is 0: the retina dark
        volume = 255 - volume
    return np.ascontiguousarray(volume)


def _header(
    ds: Dataset, frames: int, rows: int, columns: int, samples: int, decoded: int
) -> tuple[str | None, Any, str | None]:
    """(eye, spacing, problem) for measurement: problem None when the volume can be measured."""
    laterality, problem = image_eye(ds)
    photometric = _text(ds, "PhotometricInterpretation")
    if problem is None and samples != 1:
        problem = f"the B-scans have {samples} samples per pixel, not 1 (greyscale)"
    elif problem is None and photometric not in GREYSCALE:
        problem = f"the B-scans are {photometric or 'of no stated colour model'}, not greyscale"
    if problem is None and (frames < MIN_FRAMES or rows < MIN_SIZE or columns < MIN_SIZE):
        problem = (
            f"the volume ({frames} B-scans of {columns}x{rows}) is too small to measure: "
            f"at least {MIN_FRAMES} B-scans of {MIN_SIZE}x{MIN_SIZE}"
        )
    if problem is None and decoded > MAX_MEASURED_BYTES:
        problem = (
            f"the volume ({decoded // (1024 * 1024)} MiB decoded) is larger than the "
            f"{MAX_MEASURED_BYTES // (1024 * 1024)} MiB this appliance measures"
        )
    spacing = None
    if problem is None:
        spacing, problem = _geometry(ds, frames, rows, columns)
    if problem is None and laterality is None:
        problem = "the object does not say which eye (Image Laterality)"
    return laterality, spacing, problem


def read_oct(data: bytes, limits: Limits) -> OctVolume:
    """The volume and geometry of an OPT object. Raises ``ApplianceError`` only for what ingest
    should have refused (not DICOM, not OPT, over a limit, undecodable pixels)."""
    ds = read_dicom(data, limits)
    if _text(ds, "SOPClassUID") != OPT_SOP_CLASS:
        raise RejectedInput("not an Ophthalmic Tomography object", reason="not_oct")
    rows, columns = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
    frames = int(ds.get("NumberOfFrames") or 1)
    check_limits(rows, columns, frames, limits)
    samples, bits = int(ds.get("SamplesPerPixel") or 1), int(ds.get("BitsAllocated") or 8)
    decoded = frames * rows * columns * samples * max(1, bits // 8)
    if decoded > limits.max_inflated_bytes:
        raise TooLarge(
            f"the OCT volume decodes to {decoded} bytes, over the limit of "
            f"{limits.max_inflated_bytes}",
            reason="volume_too_large",
        )
    manufacturer, model = _text(ds, "Manufacturer"), _text(ds, "ManufacturerModelName")
    try:  # a header value nobody foresaw is a reason not to measure, never a crash
        laterality, spacing, problem = _header(ds, frames, rows, columns, samples, decoded)
    except Exception as exc:
        LOGGER.warning("OCT header not readable for measurement", exc_info=True)
        laterality, spacing = None, None
        problem = f"its header cannot be read for measurement ({type(exc).__name__})"
    if problem is not None:
        return OctVolume(None, None, laterality, manufacturer, model, problem)
    try:
        volume = _pixels(ds, frames)
    except RejectedInput:
        raise
    except Exception as exc:  # decoders raise many kinds on damaged input
        raise RejectedInput(
            f"the OCT pixel data cannot be decoded: {type(exc).__name__}: {exc}"[:300],
            reason="undecodable_pixels",
        ) from None
    LOGGER.debug("OCT %s: %s spacing %s", laterality, volume.shape, spacing)
    return OctVolume(volume, spacing, laterality, manufacturer, model)
