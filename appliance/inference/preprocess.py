"""Pre-processing exactly as the model cards specify: pure numpy/OpenCV, no session.

The training recipe (``models/recipe``) imports these same functions, so a model sees at run
time exactly what it saw in training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

WORK_SIZE = 256  # the field is found on a copy this wide


@dataclass(frozen=True)
class Field:
    """Circular camera field in image coordinates."""

    cx: float
    cy: float
    radius: float


def find_field(rgb: np.ndarray) -> Field:
    """The camera field: largest bright region of a downscaled luminance image."""
    h, w = rgb.shape[:2]
    scale = WORK_SIZE / max(h, w)
    small = cv2.resize(
        rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA
    )
    luma = small.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    threshold = max(
        12.0,
        float(np.percentile(luma, 5)) + 0.15 * (float(luma.max()) - float(np.percentile(luma, 5))),
    )
    mask = (luma > threshold).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count <= 1:
        return Field(w / 2, h / 2, min(h, w) / 2)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    ys, xs = np.nonzero(labels == largest)
    cx, cy = float(xs.mean()), float(ys.mean())
    # radius from the horizontal extent (fields are often cut at top and bottom)
    radius = max((xs.max() - xs.min() + 1) / 2.0, float(np.sqrt(len(xs) / np.pi)))
    return Field(cx / scale, cy / scale, radius / scale)


def square_crop(rgb: np.ndarray, cx: float, cy: float, half: float, size: int) -> np.ndarray:
    """A size×size crop of the square centred at (cx, cy) with half-side ``half``; black outside."""
    half = max(half, 1.0)
    s = size / (2 * half)
    matrix = np.array([[s, 0, size / 2 - s * cx], [0, s, size / 2 - s * cy]], dtype=np.float64)
    interpolation = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    return cv2.warpAffine(
        rgb,
        matrix,
        (size, size),
        flags=interpolation,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(0, 0, 0),
    )


def field_crop(rgb: np.ndarray, size: int, field: Field | None = None) -> np.ndarray:
    field = field or find_field(rgb)
    return square_crop(rgb, field.cx, field.cy, field.radius, size)


def frame_crop(rgb: np.ndarray, size: int, field: Field | None = None) -> np.ndarray:
    """A size×size crop centred on the *frame* centre, half-side the field radius.

    A field centred in its frame gives exactly :func:`field_crop`; a field shifted in the frame
    stays shifted (and cut where the frame cuts it). The quality gate's ``off_center`` is the
    field centre's distance from the frame centre, which a field-centred crop removes: a model
    that must judge centring has to be shown the frame.
    """
    field = field or find_field(rgb)
    h, w = rgb.shape[:2]
    return square_crop(rgb, (w - 1) / 2.0, (h - 1) / 2.0, field.radius, size)


def disc_score(rgb: np.ndarray, field: Field) -> tuple[np.ndarray, float]:
    """Where the optic disc is likely, per pixel of the ``WORK_SIZE`` field crop (higher = more
    likely; -inf outside the lit field), and the crop's pixel size in image pixels.

    The disc is bright AND the place the retinal vessels converge on: the score is the sum of
    the standardised smooth brightness and the standardised density of dark thin structures
    (a black top-hat of green, relative to the local background). Brightness alone is fooled
    by a bright rim or reflex at the field edge, which real cameras often show; vessel
    convergence alone by a dense arcade.
    """
    crop = field_crop(rgb, WORK_SIZE, field)
    luma = crop.astype(np.float32) @ np.array([0.25, 0.6, 0.15], np.float32)
    green = crop[..., 1].astype(np.float32)
    yy, xx = np.mgrid[0:WORK_SIZE, 0:WORK_SIZE]
    r = np.hypot(xx - WORK_SIZE / 2, yy - WORK_SIZE / 2)
    disc_area = r < WORK_SIZE * 0.46
    level = max(8.0, 0.25 * float(np.median(luma[disc_area])))
    lit = cv2.erode((luma > level).astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
    inside = disc_area & lit
    if int(inside.sum()) < 64:
        inside = disc_area
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (9, 9))
    background = np.maximum(cv2.GaussianBlur(green, (0, 0), 8.0), 8.0)
    vessels = cv2.morphologyEx(green, cv2.MORPH_BLACKHAT, kernel) / background
    vessels[~lit] = 0.0
    density = cv2.GaussianBlur(vessels, (0, 0), WORK_SIZE / 25)
    bright = cv2.GaussianBlur(luma, (0, 0), WORK_SIZE / 40)

    def standard(values: np.ndarray) -> np.ndarray:
        sample = values[inside]
        return np.asarray((values - sample.mean()) / (sample.std() + 1e-6))

    score = standard(bright) + standard(density)
    score[~inside] = -np.inf
    return score, (2 * field.radius) / WORK_SIZE


def locate_disc(rgb: np.ndarray, field: Field | None = None) -> tuple[float, float]:
    """Optic disc centre (image coordinates): the best of :func:`disc_score`."""
    field = field or find_field(rgb)
    return disc_candidate(*disc_score(rgb, field), field)[:2]


def disc_candidate(score: np.ndarray, scale: float, field: Field) -> tuple[float, float, float]:
    """(x, y, margin) from a :func:`disc_score` map: the disc centre and how clearly it beats
    the best place on the other side of the field centre (score units; small = the eye cannot
    be told from the disc)."""
    y, x = np.unravel_index(int(np.argmax(score)), score.shape)
    centre = WORK_SIZE / 2
    xs = np.arange(WORK_SIZE)[None, :] - centre
    other = (np.sign(xs) != np.sign(x - centre)) & (np.abs(xs) >= 0.22 * centre)
    rival = float(np.max(np.where(other, score, -np.inf)))
    margin = float(score[y, x] - rival) if np.isfinite(rival) else float("inf")
    return field.cx + (x - centre) * scale, field.cy + (y - centre) * scale, margin


def disc_crop(rgb: np.ndarray, size: int, extent: float, field: Field | None = None) -> np.ndarray:
    """A crop centred on the disc, ``extent`` × the field diameter wide."""
    field = field or find_field(rgb)
    cx, cy = locate_disc(rgb, field)
    return square_crop(rgb, cx, cy, extent * field.radius, size)


# Colour normalisation named in a card's ``input.colour`` (absent: "none"). The reference is the
# median colour of the lit field over the generator's gradable photographs (R, G, B), measured
# once; real cameras' fields lie anywhere from about half to twice it per channel.
COLOUR_REFERENCE = (158.0, 69.0, 32.0)
COLOUR_METHODS = ("none", "field-median", "field-chroma")
_LIT_LEVEL = 20  # DN of the brightest channel: below it a pixel is surround, not retina
_GAIN_LIMITS = (1.0 / 3.0, 3.0)


def normalise_colour(crop: np.ndarray, method: str) -> np.ndarray:
    """``crop`` (uint8 RGB) with each channel scaled so its median over the lit retina matches
    :data:`COLOUR_REFERENCE`.

    ``field-median`` fixes colour and exposure: a red, a brown and a yellow camera's photograph
    of one retina come out alike. ``field-chroma`` fixes the colour balance only and keeps the
    overall brightness (the mean of the three medians), for a model that must still see an
    under- or over-exposed picture. Gains are limited to 1/3..3 so a nearly empty channel is
    not blown up into noise; a crop with almost no lit retina is returned unchanged.
    """
    if method not in COLOUR_METHODS:
        raise ValueError(f"unknown colour normalisation {method!r}; known: {COLOUR_METHODS}")
    if method == "none":
        return crop
    lit = crop.max(axis=2) > _LIT_LEVEL
    if int(lit.sum()) < 0.02 * lit.size:
        return crop
    medians = np.median(crop[lit], axis=0).astype(np.float32) + np.float32(1.0)
    target = np.asarray(COLOUR_REFERENCE, np.float32)
    if method == "field-chroma":
        target = target * np.float32(medians.mean() / target.mean())
    gain = np.clip(target / medians, *_GAIN_LIMITS).astype(np.float32)
    return np.clip(crop.astype(np.float32) * gain + np.float32(0.5), 0, 255).astype(np.uint8)


def model_crop(rgb: np.ndarray, spec: dict[str, Any], field: Field | None = None) -> np.ndarray:
    """The uint8 crop a card's ``input`` block asks for, colour-normalised as it says."""
    size = int(spec["size"])
    if spec["crop"] == "field":
        crop = field_crop(rgb, size, field)
    elif spec["crop"] == "frame":
        crop = frame_crop(rgb, size, field)
    elif spec["crop"] == "disc":
        crop = disc_crop(rgb, size, float(spec["disc_extent"]), field)
    else:
        raise ValueError(f"unknown crop {spec['crop']!r} in model card")
    return normalise_colour(crop, str(spec.get("colour", "none")))


def to_tensor(crop: np.ndarray, mean: list[float], std: list[float]) -> np.ndarray:
    """HWC uint8 RGB → 1×3×H×W float32, scaled to [0, 1] then normalised per channel."""
    scaled = crop.astype(np.float32) / np.float32(255.0)
    normalised = (scaled - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(normalised.transpose(2, 0, 1)[None], dtype=np.float32)


def prepare(rgb: np.ndarray, spec: dict[str, Any], field: Field | None = None) -> np.ndarray:
    """The model input for ``rgb`` according to a card's ``input`` block."""
    return to_tensor(model_crop(rgb, spec, field), spec["mean"], spec["std"])
