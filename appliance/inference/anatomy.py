"""Which eye and which field a photograph shows, from where the optic disc lies.

In a fundus photograph the disc is on the nasal side: right of the macula for a right eye,
left for a left eye. A macula-centred field puts the disc well off centre; a disc-centred field
puts it near the centre, and then the darker macula on the temporal side tells the eye.
Pure numpy/OpenCV.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from appliance.inference.preprocess import (
    WORK_SIZE,
    Field,
    disc_candidate,
    disc_score,
    field_crop,
    find_field,
)

DISC_CENTRED_WITHIN = 0.22  # disc closer than this (in field radii) to the centre: disc-centred
CLEAR_MARGIN = 1.0  # disc score lead over the other side's best place that makes the eye sure


@dataclass(frozen=True)
class Anatomy:
    laterality: str  # "L" / "R"
    field: str  # "macula" / "disc"
    disc_offset: float  # horizontal disc offset from the field centre, in field radii
    confidence: float  # 0-1, how clear the cue was


def detect(rgb: np.ndarray, field: Field | None = None) -> Anatomy:
    field = field or find_field(rgb)
    score, scale = disc_score(rgb, field)  # once, for the disc and the macula side
    disc_x, _, margin = disc_candidate(score, scale, field)
    offset = (disc_x - field.cx) / field.radius
    if abs(offset) >= DISC_CENTRED_WITHIN:
        placed = (abs(offset) - DISC_CENTRED_WITHIN) / 0.15 + 0.5
        # A disc that barely beats a place on the other side could be either: say so.
        clear = margin / CLEAR_MARGIN
        confidence = float(max(0.0, min(1.0, placed, clear)))
        return Anatomy("R" if offset > 0 else "L", "macula", float(offset), confidence)
    # Disc-centred: the macula lies temporal to the disc, about 0.45 radii away: darker, and
    # free of vessels. Real eyes (a child's macular reflex) can make it bright, so the eye is
    # claimed only when both cues point the same way; otherwise it is reported as unknown.
    crop = field_crop(rgb, WORK_SIZE, field)
    luma = cv2.GaussianBlur(
        crop.astype(np.float32) @ np.array([0.3, 0.6, 0.1], np.float32), (0, 0), WORK_SIZE / 30
    )
    centre = WORK_SIZE / 2
    disc_col = centre + offset * centre
    step = 0.45 * centre
    row = int(centre)
    left = float(luma[row, int(np.clip(disc_col - step, 0, WORK_SIZE - 1))])
    right = float(luma[row, int(np.clip(disc_col + step, 0, WORK_SIZE - 1))])
    # right eye: macula (darker) to the left of the disc
    laterality = "R" if left < right else "L"
    contrast = abs(left - right) / max(left, right, 1.0)
    agrees = _avascular_side(score, disc_col) == laterality
    confidence = float(min(1.0, contrast * 5)) if agrees else 0.0
    return Anatomy(laterality, "disc", float(offset), confidence)


def _avascular_side(score: np.ndarray, disc_col: float) -> str:
    """The eye the vessel-free side says: the side of the disc whose brightness-and-vessel
    score (:func:`disc_score`) is lower holds the macula ("R" when that is the left side)."""
    half = int(WORK_SIZE * 0.06)
    row = WORK_SIZE // 2
    means = []
    for col in (disc_col - 0.45 * WORK_SIZE / 2, disc_col + 0.45 * WORK_SIZE / 2):
        c = int(np.clip(col, half, WORK_SIZE - half - 1))
        window = score[row - half : row + half + 1, c - half : c + half + 1]
        window = window[np.isfinite(window)]
        means.append(float(window.mean()) if window.size else 0.0)
    return "R" if means[0] < means[1] else "L"
