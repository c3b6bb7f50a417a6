"""On-purpose defects for fundus photographs, each with a known quality reason code.

Every degradation takes an RGB uint8 fundus photograph and a ``strength`` in [0, 1] and returns
a new RGB uint8 array of the same shape with ONE defect: 0 leaves the picture (nearly) as it
was, 1 is severe, and the defect grows monotonically in between. The default strength of each
is one at which the defect is plainly visible and the quality gate reports it. Sizes are
relative to the circular camera field, which each function finds for itself with a plain
threshold, so they work on real photographs as well as on :func:`appliance.synth.make_fundus`
output.

:data:`DEGRADATIONS` maps the reason code the quality gate should report to the function that
provokes it. :func:`not_fundus` is different: it draws a whole picture that is not a fundus
photograph from a seed (the gate should answer only ``not_fundus`` for it).
"""

from __future__ import annotations

import logging
from typing import Protocol

import cv2
import numpy as np

LOGGER = logging.getLogger(__name__)


class Degradation(Protocol):
    """``(rgb, strength=<clearly visible>) -> rgb`` with one defect; see the module docstring."""

    def __call__(self, rgb: np.ndarray, strength: float = ...) -> np.ndarray: ...


NOT_FUNDUS_KINDS = ("document", "scene", "grey", "face")


def _check(rgb: np.ndarray, strength: float) -> None:
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 HxWx3 array, got {rgb.dtype} {rgb.shape}")
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be in [0, 1], got {strength}")


def _field(rgb: np.ndarray) -> tuple[np.ndarray, float, float, float]:
    """Camera field mask and its circle (cx, cy, radius) from the area and centroid."""
    brightest = np.maximum(np.maximum(rgb[..., 0], rgb[..., 1]), rgb[..., 2])
    counts = np.cumsum(np.bincount(brightest.ravel(), minlength=256))
    p99 = int(np.searchsorted(counts, 0.99 * counts[-1]))
    mask = brightest > max(12.0, 0.08 * p99)
    moments = cv2.moments(mask.astype(np.uint8), binaryImage=True)
    area = moments["m00"]
    if area < 16:  # nothing there: pretend the field is the inscribed circle
        h, w = mask.shape
        return np.ones_like(mask), (w - 1) / 2.0, (h - 1) / 2.0, min(h, w) / 2.0
    cx, cy = moments["m10"] / area, moments["m01"] / area
    return mask, float(cx), float(cy), float(np.sqrt(area / np.pi))


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def defocus(rgb: np.ndarray, strength: float = 0.5) -> np.ndarray:
    """Out of focus: a disc-shaped blur whose radius grows to 3.5 % of the field radius.

    The blur is normalised inside the field, so the field edge stays sharp and no black seeps
    in, as with a real camera whose field stop is not in the retinal focal plane.
    """
    _check(rgb, strength)
    mask, _, _, radius = _field(rgb)
    blur_r = strength * 0.035 * radius
    if blur_r < 0.5:
        return rgb.copy()
    k = int(np.ceil(blur_r))
    yy, xx = np.mgrid[-k : k + 1, -k : k + 1]
    kernel = np.clip(blur_r + 0.5 - np.hypot(xx, yy), 0.0, 1.0).astype(np.float32)
    kernel /= kernel.sum()
    weight = mask.astype(np.float32)
    blurred = np.asarray(cv2.filter2D(rgb.astype(np.float32) * weight[..., None], -1, kernel))
    norm = np.asarray(cv2.filter2D(weight, -1, kernel))
    sharp_edge = blurred / np.maximum(norm, 1e-3)[..., None]
    return np.where(mask[..., None], _to_uint8(sharp_edge), rgb)


def underexpose(rgb: np.ndarray, strength: float = 0.85) -> np.ndarray:
    """Too dark: the exposure drops to 15 % at strength 1 (small pupil, weak flash)."""
    _check(rgb, strength)
    return _to_uint8(rgb.astype(np.float32) * (1.0 - 0.85 * strength))


def overexpose(rgb: np.ndarray, strength: float = 0.5) -> np.ndarray:
    """Too bright: the exposure rises to 3.5 times at strength 1 and clips at white.

    The default (2.25 times) is plainly too bright on a dark fundus too; at 2 times a dark
    fundus only clips its red channel, which real cameras do on gradable photographs.
    """
    _check(rgb, strength)
    return _to_uint8(rgb.astype(np.float32) * (1.0 + 2.5 * strength))


def low_contrast(rgb: np.ndarray, strength: float = 0.7) -> np.ndarray:
    """Haze (cataract, dirty lens): a veil of the field's own greyed mean colour, up to 85 %.

    The mean brightness stays about where it was; only the detail fades.
    """
    _check(rgb, strength)
    mask, _, _, _ = _field(rgb)
    img = rgb.astype(np.float32)
    mean = np.array(cv2.mean(rgb, mask=mask.astype(np.uint8))[:3], dtype=np.float32)
    grey = float(mean @ np.array([0.299, 0.587, 0.114], dtype=np.float32))
    veil = 0.7 * mean + 0.3 * grey
    alpha = np.float32(0.85 * strength) * mask.astype(np.float32)[..., None]
    return _to_uint8(img + alpha * (veil.astype(np.float32) - img))


def uneven_illumination(
    rgb: np.ndarray, strength: float = 1.0, angle_deg: float = 0.0
) -> np.ndarray:
    """A shadow over one side of the field (small pupil, misaligned camera).

    ``angle_deg`` points from the field centre to the shadowed side (0 = right, 90 = down).
    At strength 1 (the default) the far side keeps 15 % of its light; the near side is
    untouched. Real cameras' gradable photographs show up to 2:1 across the field (strength
    0.6 here): only a side too dark to read is a reason to retake.
    """
    _check(rgb, strength)
    _, cx, cy, radius = _field(rgb)
    h, w = rgb.shape[:2]
    theta = np.radians(angle_deg)
    xs = (np.arange(w, dtype=np.float32) - cx)[None, :] * np.float32(np.cos(theta))
    ys = (np.arange(h, dtype=np.float32) - cy)[:, None] * np.float32(np.sin(theta))
    along = (xs + ys) / np.float32(radius)  # -1 .. 1 across the field
    shadow = 1.0 / (1.0 + np.exp(-(along - 0.3) / 0.16))
    gain = 1.0 - 0.85 * strength * shadow
    return _to_uint8(rgb.astype(np.float32) * gain[..., None])


def off_center(rgb: np.ndarray, strength: float = 0.4, angle_deg: float = 0.0) -> np.ndarray:
    """The field shifted towards ``angle_deg`` (0 = right, 90 = down) until the frame cuts it.

    After the shift the circle reaches past the frame edge by ``strength`` field radii along
    that direction (0: it just touches the edge, 1: half the field is cut off). Uncovered frame
    is black.
    """
    _check(rgb, strength)
    _, cx, cy, radius = _field(rgb)
    h, w = rgb.shape[:2]
    ux, uy = float(np.cos(np.radians(angle_deg))), float(np.sin(np.radians(angle_deg)))
    # Distance from the centre to the frame edge along (ux, uy).
    reach = []
    if ux > 1e-9:
        reach.append((w - 1 - cx) / ux)
    if ux < -1e-9:
        reach.append(-cx / ux)
    if uy > 1e-9:
        reach.append((h - 1 - cy) / uy)
    if uy < -1e-9:
        reach.append(-cy / uy)
    shift = max(0.0, min(reach) + (strength - 1.0) * radius)
    matrix = np.array([[1.0, 0.0, shift * ux], [0.0, 1.0, shift * uy]], dtype=np.float64)
    return cv2.warpAffine(
        rgb, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )


DEGRADATIONS: dict[str, Degradation] = {
    "out_of_focus": defocus,
    "too_dark": underexpose,
    "too_bright": overexpose,
    "low_contrast": low_contrast,
    "uneven_illumination": uneven_illumination,
    "off_center": off_center,
}


# -- pictures that are not fundus photographs ---------------------------------------------


def _document(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A page of text lines on white paper."""
    img = np.full((h, w, 3), rng.uniform(232, 250), dtype=np.float32)
    img *= np.array([1.0, 0.99, 0.96], dtype=np.float32)  # warm paper
    line_h = max(2, h // 60)
    margin = w // 10
    y = h // 12
    while y + line_h < h - h // 12:
        x = margin
        end = w - margin if rng.random() < 0.85 else int(w * rng.uniform(0.3, 0.8))
        while x < end:
            word = int(rng.uniform(0.02, 0.09) * w)
            ink = rng.uniform(20, 70)
            cv2.rectangle(img, (x, y), (min(x + word, end), y + line_h), (ink, ink, ink), -1)
            x += word + max(2, w // 80)
        y += int(line_h * rng.uniform(2.0, 2.6)) + (3 * line_h if rng.random() < 0.1 else 0)
    return img


def _scene(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Random colourful rectangles and circles on a mid-tone background."""
    img = np.empty((h, w, 3), dtype=np.float32)
    img[:] = rng.uniform(90, 220, size=3)
    s = min(h, w)
    for _ in range(int(rng.integers(25, 60))):
        colour = tuple(float(c) for c in rng.uniform(0, 255, size=3))
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        size = int(rng.uniform(0.03, 0.25) * s)
        if rng.random() < 0.5:
            cv2.circle(img, (x, y), size, colour, -1, cv2.LINE_AA)
        else:
            x2, y2 = x + int(rng.uniform(-2, 2) * size), y + int(rng.uniform(-2, 2) * size)
            cv2.rectangle(img, (x, y), (x2, y2), colour, -1)
    return cv2.GaussianBlur(img, (0, 0), max(0.5, s / 800))


def _grey(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A uniform grey frame (lens cap half off, blank export)."""
    return np.full((h, w, 3), rng.uniform(40, 210), dtype=np.float32)


def _face(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A skin-toned face-like oval with eyes and mouth, on a plain wall; no camera field."""
    img = np.empty((h, w, 3), dtype=np.float32)
    img[:] = rng.uniform(120, 230, size=3)
    s = min(h, w)
    cx, cy = w // 2 + int(rng.uniform(-0.1, 0.1) * w), h // 2
    ax, ay = int(0.3 * s), int(0.4 * s)
    skin = np.array([224, 172, 138], dtype=np.float32) * rng.uniform(0.6, 1.05)
    hair = tuple(float(c) for c in rng.uniform(30, 110) * np.array([1.0, 0.8, 0.6]))
    cv2.ellipse(img, (cx, cy - ay // 5), (int(ax * 1.1), int(ay * 0.95)), 0, 180, 360, hair, -1)
    cv2.ellipse(img, (cx, cy), (ax, ay), 0, 0, 360, tuple(float(c) for c in skin), -1, cv2.LINE_AA)
    for side in (-1, 1):
        eye_c = (cx + side * ax // 2, cy - ay // 6)
        cv2.ellipse(img, eye_c, (ax // 5, ay // 12), 0, 0, 360, (245, 245, 240), -1)
        cv2.circle(img, eye_c, ay // 14, (60, 40, 30), -1)
    lips = tuple(float(c) for c in skin * np.array([0.8, 0.55, 0.55]))
    cv2.ellipse(img, (cx, cy + ay // 2), (ax // 3, ay // 12), 0, 0, 360, lips, -1)
    return cv2.GaussianBlur(img, (0, 0), max(1.0, s / 200))


_PAINTERS = {"document": _document, "scene": _scene, "grey": _grey, "face": _face}


def not_fundus(
    seed: int, size: tuple[int, int] = (1024, 1024), kind: str | None = None
) -> np.ndarray:
    """An RGB uint8 picture that is not a fundus photograph.

    ``kind`` is one of :data:`NOT_FUNDUS_KINDS`; by default it cycles with the seed.
    """
    if kind is None:
        kind = NOT_FUNDUS_KINDS[seed % len(NOT_FUNDUS_KINDS)]
    if kind not in _PAINTERS:
        raise ValueError(f"kind must be one of {NOT_FUNDUS_KINDS}, got {kind!r}")
    h, w = int(size[0]), int(size[1])
    if h < 16 or w < 16:
        raise ValueError(f"size must be (height, width) with both >= 16, got {size}")
    rng = np.random.default_rng(seed)
    img = _PAINTERS[kind](rng, h, w)
    img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(2.0)
    return _to_uint8(img)
