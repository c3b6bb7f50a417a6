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

from appliance.inference.preprocess import WORK_SIZE, Field, field_crop, find_field, locate_disc

DISC_CENTRED_WITHIN = 0.22  # disc closer than this (in field radii) to the centre: disc-centred


@dataclass(frozen=True)
class Anatomy:
    laterality: str  # "L" / "R"
    field: str  # "macula" / "disc"
    disc_offset: float  # horizontal disc offset from the field centre, in field radii
    confidence: float  # 0-1, how clear the cue was


def detect(rgb: np.ndarray, field: Field | None = None) -> Anatomy:
    field = field or find_field(rgb)
    disc_x, _ = locate_disc(rgb, field)
    offset = (disc_x - field.cx) / field.radius
    if abs(offset) >= DISC_CENTRED_WITHIN:
        confidence = float(min(1.0, (abs(offset) - DISC_CENTRED_WITHIN) / 0.15 + 0.5))
        return Anatomy("R" if offset > 0 else "L", "macula", float(offset), confidence)
    # Disc-centred: the macula (darker) lies temporal to the disc, about 0.45 radii away.
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
    return Anatomy(laterality, "disc", float(offset), float(min(1.0, contrast * 5)))
