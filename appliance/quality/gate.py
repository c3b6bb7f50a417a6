"""The quality gate: is this fundus photograph good enough to grade, and if not, why?

:func:`assess` finds the camera field on a small copy of the image, resamples the field to a
fixed size (radius :data:`~appliance.quality.metrics.NORMALISED_RADIUS` pixels) and measures
it there, so results do not depend on the camera's resolution. Each measurement is compared
with its threshold through a sub-score in [0, 1] that is exactly 0.5 at the threshold and above
0.5 on the good side; a reason is reported when its sub-score is below 0.5, and the overall
score is the smallest sub-score. So ``gradable`` is True exactly when there are no reasons and
exactly when ``score >= 0.5``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, fields

import cv2
import numpy as np

from appliance.domain import FieldGeometry, QualityReport
from appliance.quality import metrics as m
from appliance.quality.field import FieldFit, field_coverage, find_field
from appliance.quality.guidance import GUIDANCE, REASON_ORDER

LOGGER = logging.getLogger(__name__)

DETECT_SIDE = 640  # longer side, in pixels, of the copy the field is found in
_STEEPNESS = 4.0  # how fast a sub-score leaves 0.5 as the measurement leaves its threshold
_FRACTIONS = (
    "max_saturated_fraction",
    "max_unevenness",
    "min_field_coverage",
    "min_fundus_likeness",
)


@dataclass(frozen=True)
class QualityThresholds:
    """Pass marks for :func:`assess`; measurements exactly at a threshold pass."""

    # Sharpness: RMS of 1-2 px detail over RMS of 2-6 px detail in green at the normalised scale.
    min_focus: float = 0.5
    # Mean BT.601 luma inside the field, DN 0-255: below this the image is too dark.
    min_brightness: float = 40.0
    # Mean BT.601 luma inside the field, DN 0-255: above this the image is too bright.
    max_brightness: float = 170.0
    # Larger of the green and blue fractions (0-1) of field pixels at or above 250 DN (clipped).
    # Red is not counted: it clips in most real cameras' photographs of a light fundus and
    # carries little of what a grader reads (vessels and lesions are read in green).
    max_saturated_fraction: float = 0.05
    # Spread (5th-95th percentile) of flat-fielded green, relative to the background (0 = flat).
    min_contrast: float = 0.1
    # 1 - darkest / brightest of eight sector medians of luma (0 = even, 1 = one side black).
    # Uneven illumination is a reason to retake only when the darkest sector is also too dark
    # to read (below min_sector_brightness): real cameras show 2:1 across a gradable field.
    max_unevenness: float = 0.35
    # Median luma of the darkest sector, DN 0-255, below which that part of the field is lost.
    min_sector_brightness: float = 35.0
    # Distance from the frame centre to the field centre, in field radii.
    max_center_offset: float = 0.25
    # Fraction (0-1) of the field's central disc (60 % of its radius) inside the frame and any
    # crop. A circle cut at the top and bottom by the sensor keeps its centre; a shifted one not.
    min_field_coverage: float = 0.9
    # Fundus likeness 0-1: weakest of the field-shape, dark-surround, size and colour cues.
    min_fundus_likeness: float = 0.5

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{f.name} must be a finite number >= 0, got {value!r}")
            if f.name in _FRACTIONS and value > 1:
                raise ValueError(f"{f.name} is a fraction and must be <= 1, got {value!r}")


# The keys of ``QualityReport.metrics``, always all present, in this order.
METRIC_KEYS: tuple[str, ...] = (
    "fundus_likeness",  # 0-1, weakest of the cues below (see min_fundus_likeness)
    "field_found",  # 1.0 when a circular field was found, else 0.0
    "field_circularity",  # 0-1, share of the field outline that lies on the fitted circle
    "field_iou",  # 0-1, overlap of the bright area with the fitted circle
    "surround_ratio",  # brightness just outside the circle / just inside (0 = black surround)
    "field_size",  # field diameter / shorter frame side
    "center_offset",  # field centre to frame centre, in field radii
    "field_coverage",  # 0-1, share of the field circle inside the frame and any crop
    "central_coverage",  # 0-1, share of the central disc (0.6 radius) inside frame and crop
    "brightness",  # mean luma in the field, DN
    "saturated_fraction",  # 0-1, larger of the green and blue clipped fractions
    "saturated_red",
    "saturated_green",
    "saturated_blue",
    "focus",  # fine / coarse detail ratio of green
    "contrast",  # 5th-95th percentile spread of flat-fielded green
    "unevenness",  # 0-1, 1 - darkest / brightest sector median luma
    "darkest_sector",  # median luma of the darkest sector, DN
    "red_green_ratio",  # mean red / mean green in the field (1.0 for greyscale pictures)
)
# Field metrics when no field was found; image metrics are then taken over the inscribed circle.
_NO_FIELD = {
    "field_found": 0.0,
    "field_circularity": 0.0,
    "field_iou": 0.0,
    "surround_ratio": 1.0,
    "field_size": 0.0,
    "center_offset": 0.0,
    "field_coverage": 0.0,
    "central_coverage": 0.0,
}


def subscore(value: float, mark: float) -> float:
    """0.5 when ``value == mark``, towards 1 as ``value`` exceeds it, towards 0 below it."""
    if math.isnan(value) or math.isnan(mark):
        return 0.0  # never pass on a measurement that went wrong
    if value == mark:
        return 0.5
    if mark <= 0.0:
        return 1.0 if value > mark else 0.0
    if value <= 0.0:
        return 0.0
    ratio = (value / mark) ** _STEEPNESS
    return float(ratio / (1.0 + ratio)) if math.isfinite(ratio) else 1.0


def _at_least(value: float, mark: float) -> float:
    return subscore(value, mark)


def _at_most(value: float, mark: float) -> float:
    return subscore(mark, value)


def _at_least_fraction(value: float, mark: float) -> float:
    """For measurements bounded by 1 (coverage, likeness): compares what falls short of 1."""
    return _at_most(1.0 - value, 1.0 - mark)


def _validate(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        raise ValueError(f"expected a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected dtype uint8, got {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(f"expected an HxWx3 RGB or HxW greyscale image, got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"expected a non-empty image, got shape {image.shape}")
    return np.ascontiguousarray(image)


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    shrink = width < image.shape[1] or height < image.shape[0]
    interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    out = cv2.resize(image, (max(1, width), max(1, height)), interpolation=interp)
    return out if out.ndim == 3 else np.repeat(out[..., None], 3, axis=2)


def _is_colour(rgb: np.ndarray) -> bool:
    r, g, b = (rgb[..., c].astype(np.int16) for c in range(3))
    return float(np.mean(np.abs(r - g)) + np.mean(np.abs(g - b))) > 3.0


@dataclass(frozen=True)
class _Circle:
    cx: float
    cy: float
    radius: float
    crop: tuple[float, float, float, float]  # x0, y0, x1, y1 (inclusive) the field is cut to

    def inside(self, xs: np.ndarray, ys: np.ndarray, margin: float = 0.0) -> np.ndarray:
        x0, y0, x1, y1 = self.crop
        return (xs >= x0 + margin) & (xs <= x1 - margin) & (ys >= y0 + margin) & (ys <= y1 - margin)


def _measure(image: np.ndarray, circle: _Circle, colour: bool) -> dict[str, float]:
    """Exposure, focus, contrast, evenness and colour of the field, at the normalised scale."""
    h, w = image.shape[:2]
    r = circle.radius
    x0, x1 = max(0, int(circle.cx - r - 2)), min(w, int(math.ceil(circle.cx + r + 3)))
    y0, y1 = max(0, int(circle.cy - r - 2)), min(h, int(math.ceil(circle.cy + r + 3)))
    if x1 <= x0 or y1 <= y0:
        x0, x1, y0, y1 = 0, w, 0, h
    scale = m.NORMALISED_RADIUS / r
    out_w, out_h = round((x1 - x0) * scale), round((y1 - y0) * scale)
    norm = _resize(image[y0:y1, x0:x1], out_w, out_h)
    sx, sy = norm.shape[1] / (x1 - x0), norm.shape[0] / (y1 - y0)
    ncx, ncy = (circle.cx - x0 + 0.5) * sx - 0.5, (circle.cy - y0 + 0.5) * sy - 0.5
    dx = np.arange(norm.shape[1], dtype=np.float32)[None, :] - np.float32(ncx)
    dy = np.arange(norm.shape[0], dtype=np.float32)[:, None] - np.float32(ncy)
    dist = np.sqrt(dx * dx + dy * dy)
    # The crop in original pixels, for every normalised pixel centre; a margin keeps the
    # measurements off the crop edge's own step.
    ox = (np.arange(norm.shape[1], dtype=np.float32)[None, :] + 0.5) / sx - 0.5 + x0
    oy = (np.arange(norm.shape[0], dtype=np.float32)[:, None] + 0.5) / sy - 0.5 + y0
    in_crop = circle.inside(ox, oy, margin=0.03 * r)
    mask = (dist <= 0.9 * m.NORMALISED_RADIUS) & in_crop
    green = norm[..., 1].astype(np.float32)
    green = m.fill_outside(green, (dist <= 0.95 * m.NORMALISED_RADIUS) & in_crop)
    luma = m.luminance(norm)
    brightness, (sat_r, sat_g, sat_b) = m.exposure(norm, luma, mask)
    angle = np.arctan2(np.broadcast_to(dy, dist.shape), np.broadcast_to(dx, dist.shape))
    unevenness, darkest = m.unevenness(luma, dist, angle, in_crop)
    return {
        "brightness": brightness,
        "saturated_fraction": max(sat_g, sat_b),
        "saturated_red": sat_r,
        "saturated_green": sat_g,
        "saturated_blue": sat_b,
        "focus": m.focus(green, mask),
        "contrast": m.contrast(green, mask),
        "unevenness": unevenness,
        "darkest_sector": darkest,
        "red_green_ratio": m.red_green_ratio(norm, mask) if colour else 1.0,
        "blue_green_ratio": m.blue_green_ratio(norm, mask) if colour else 1.0,
    }


def _field_metrics(fit: FieldFit | None, circle: _Circle, w: int, h: int) -> dict[str, float]:
    """Where the field sits in a ``w`` x ``h`` frame and how field-like it looks."""
    if fit is None:
        return dict(_NO_FIELD)
    return {
        "field_found": 1.0,
        "field_circularity": fit.circularity,
        "field_iou": fit.iou,
        "surround_ratio": fit.surround_ratio,
        "field_size": 2.0 * circle.radius / min(h, w),
        "center_offset": m.center_offset(circle.cx, circle.cy, circle.radius, w, h),
        "field_coverage": field_coverage(circle.cx, circle.cy, circle.radius, w, h, circle.crop),
        "central_coverage": field_coverage(
            circle.cx, circle.cy, 0.6 * circle.radius, w, h, circle.crop
        ),
    }


def assess(rgb: np.ndarray, thresholds: QualityThresholds = QualityThresholds()) -> QualityReport:
    """Grade the quality of one fundus photograph (RGB uint8 HxWx3, or HxW / HxWx1 greyscale).

    Returns reasons in :data:`~appliance.quality.guidance.REASON_ORDER`, one guidance sentence
    per reason, a score in [0, 1], the measurements under :data:`METRIC_KEYS` and the field
    circle in the input's pixel coordinates. A picture that does not look like a fundus
    photograph gets only ``not_fundus`` (and no field). Never raises for a non-empty uint8
    array of a supported shape; raises ValueError for anything else.
    """
    image = _validate(rgb)
    h, w = image.shape[:2]
    shrink = min(1.0, DETECT_SIDE / max(h, w))
    small = _resize(image, round(w * shrink), round(h * shrink))
    colour = image.ndim == 3 and _is_colour(small)
    fit = find_field(small)
    if fit is not None:
        sx, sy = small.shape[1] / w, small.shape[0] / h
        x0, y0, x1, y1 = fit.crop
        circle = _Circle(
            cx=(fit.cx + 0.5) / sx - 0.5,
            cy=(fit.cy + 0.5) / sy - 0.5,
            radius=fit.radius / math.sqrt(sx * sy),
            crop=(x0 / sx, y0 / sy, (x1 + 1) / sx - 1, (y1 + 1) / sy - 1),
        )
    else:  # no field: measure the inscribed circle so every metric still has a value
        circle = _Circle(
            cx=(w - 1) / 2.0, cy=(h - 1) / 2.0, radius=min(h, w) / 2.0, crop=(0, 0, w - 1, h - 1)
        )
    values = _measure(image, circle, colour)
    field = _field_metrics(fit, circle, w, h)
    # Colour is no evidence in greyscale pictures or in fields mostly clipped to white.
    colour_cue = colour and max(values[f"saturated_{c}"] for c in ("red", "green", "blue")) <= 0.5
    likeness = m.fundus_likeness(
        fit, field["field_size"], values["red_green_ratio"], values["blue_green_ratio"], colour_cue
    )
    raw = {"fundus_likeness": likeness, **field, **values}
    metrics = {key: _finite(raw[key]) for key in METRIC_KEYS}
    t = thresholds
    fundus_sub = _at_least_fraction(likeness, t.min_fundus_likeness)
    if fundus_sub < 0.5:
        return _report({"not_fundus": fundus_sub}, metrics, None)
    subs = {
        "off_center": min(
            _at_most(metrics["center_offset"], t.max_center_offset),
            _at_least_fraction(metrics["central_coverage"], t.min_field_coverage),
        ),
        "too_dark": _at_least(metrics["brightness"], t.min_brightness),
        "too_bright": min(
            _at_most(metrics["brightness"], t.max_brightness),
            _at_most(metrics["saturated_fraction"], t.max_saturated_fraction),
        ),
        # uneven only when the imbalance is large AND its dark side is too dark to read
        "uneven_illumination": max(
            _at_most(metrics["unevenness"], t.max_unevenness),
            _at_least(metrics["darkest_sector"], t.min_sector_brightness),
        ),
        "out_of_focus": _at_least(metrics["focus"], t.min_focus),
        "low_contrast": _at_least(metrics["contrast"], t.min_contrast),
        "not_fundus": fundus_sub,
    }
    geometry = FieldGeometry(cx=circle.cx, cy=circle.cy, radius=circle.radius)
    return _report(subs, metrics, geometry)


def _finite(value: float) -> float:
    """A plain float for JSON; NaN or infinity (never expected) becomes 0.0."""
    value = float(value)
    return value if math.isfinite(value) else 0.0


def _report(
    subs: dict[str, float], metrics: dict[str, float], geometry: FieldGeometry | None
) -> QualityReport:
    score = float(min(subs.values()))
    reasons = tuple(code for code in REASON_ORDER if subs.get(code, 1.0) < 0.5)
    LOGGER.debug("quality score %.3f reasons %s", score, ",".join(reasons) or "-")
    return QualityReport(
        gradable=not reasons,
        score=score,
        reasons=reasons,
        guidance=tuple(GUIDANCE[code] for code in reasons),
        metrics=metrics,
        field_geometry=geometry,
    )
