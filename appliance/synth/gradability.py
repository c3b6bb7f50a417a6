"""Acquisition defects on case pictures, and the gradability label each defect strength earns.

The defects are the quality gate's image reasons (:data:`appliance.synth.DEGRADATIONS`), with
one change: ``off_center`` moves the field by ``0.5 * strength`` field radii in any direction
(:func:`shift_field`) instead of pushing it to the frame edge, so mild misalignment exists too.

Each defect has two strength levels (:data:`DEFECT_LEVELS`): below ``usable`` the defect is too
faint to matter (quality ``good``), from ``usable`` it is visible but the picture can still be
graded (``usable``), and from ``reject`` the picture cannot be graded (``reject``). The reject
levels sit where :func:`appliance.quality.assess` starts to flag the reason on typical case
pictures (see ``tests/synth/test_gradability.py`` and docs/synth/README.md for agreement).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import cv2
import numpy as np

from appliance.synth.degrade import (
    defocus,
    low_contrast,
    overexpose,
    underexpose,
    uneven_illumination,
)
from appliance.synth.layout import FundusLayout

LOGGER = logging.getLogger(__name__)

QUALITIES = ("good", "usable", "reject")


@dataclass(frozen=True)
class DefectLevels:
    """Strengths at which a defect makes a picture ``usable`` and then ``reject``."""

    usable: float
    reject: float

    def __post_init__(self) -> None:
        if not 0.0 < self.usable < self.reject < 1.0:
            raise ValueError(f"need 0 < usable < reject < 1, got {self}")

    def quality(self, strength: float) -> str:
        """``good``, ``usable`` or ``reject`` at ``strength``."""
        if strength >= self.reject:
            return "reject"
        return "usable" if strength >= self.usable else "good"


# Reject levels: where the gate flags about half of the case pictures (calibrated on 8-12 cases
# at 600x800, 768x1024 and native size, strengths in steps of 0.05; too_bright and
# uneven_illumination re-measured on 16 cases in each camera's own frame shape with per-photo
# looks after the gate learned to judge clipping on green/blue and the darkest sector: a dark
# fundus whose red alone clips, or one side in shade with its vessels still visible, is
# gradable).
DEFECT_LEVELS: dict[str, DefectLevels] = {
    "out_of_focus": DefectLevels(usable=0.1, reject=0.3),
    "too_dark": DefectLevels(usable=0.3, reject=0.7),
    "too_bright": DefectLevels(usable=0.25, reject=0.45),
    "low_contrast": DefectLevels(usable=0.25, reject=0.6),
    "uneven_illumination": DefectLevels(usable=0.55, reject=0.85),
    "off_center": DefectLevels(usable=0.15, reject=0.5),
}
DEFECTS = tuple(DEFECT_LEVELS)


def quality_of(defect: str | None, strength: float) -> str:
    """``good``, ``usable`` or ``reject`` for a picture with ``defect`` at ``strength``."""
    if defect is None:
        return "good"
    if defect not in DEFECT_LEVELS:
        raise ValueError(f"defect must be one of {DEFECTS} or None, got {defect!r}")
    return DEFECT_LEVELS[defect].quality(strength)


def strength_band(defect: str, quality: str) -> tuple[float, float]:
    """The strengths [low, high) that give ``quality`` for ``defect``."""
    levels = DEFECT_LEVELS[defect]
    bands = {
        "good": (0.02, levels.usable),
        "usable": (levels.usable, levels.reject),
        "reject": (levels.reject, 1.0),
    }
    return bands[quality]


def shift_field(
    rgb: np.ndarray, layout: FundusLayout, strength: float, angle_deg: float
) -> np.ndarray:
    """The field moved ``0.5 * strength`` field radii towards ``angle_deg`` (0 right, 90 down)."""
    shift = 0.5 * strength * layout.field_radius
    a = math.radians(angle_deg)
    matrix = np.array([[1.0, 0.0, shift * math.cos(a)], [0.0, 1.0, shift * math.sin(a)]])
    h, w = rgb.shape[:2]
    return cv2.warpAffine(
        rgb, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )


def apply_defect(
    rgb: np.ndarray,
    layout: FundusLayout,
    defect: str | None,
    strength: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """``rgb`` (uint8) with ``defect`` at ``strength``; the direction comes from ``rng``."""
    if defect is None or strength <= 0.0:
        return rgb
    angle = float(rng.uniform(0.0, 360.0))
    if defect == "out_of_focus":
        return defocus(rgb, strength)
    if defect == "too_dark":
        return underexpose(rgb, strength)
    if defect == "too_bright":
        return overexpose(rgb, strength)
    if defect == "low_contrast":
        return low_contrast(rgb, strength)
    if defect == "uneven_illumination":
        return uneven_illumination(rgb, strength, angle_deg=angle)
    if defect == "off_center":
        return shift_field(rgb, layout, strength, angle)
    raise ValueError(f"defect must be one of {DEFECTS} or None, got {defect!r}")
