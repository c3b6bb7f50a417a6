"""Finding the circular camera field (field of view) in a fundus photograph.

A fundus camera images the retina through a round field stop: a bright disc on a black
surround, sometimes cut off by the frame edge. :func:`find_field` thresholds the brightest
channel relative to the surround, keeps the largest blob, and fits a circle to the part of its
outline that is not the frame edge, dropping outline points that stray (a shadowed crescent, an
eyelash) before the final fit. The fit also yields the shape cues the gate uses to tell a fundus
photograph from other pictures.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

LOGGER = logging.getLogger(__name__)

_MIN_POINTS = 12  # fewer free outline points than this: no circle
_MIN_RADIUS_PX = 6.0


@dataclass(frozen=True)
class FieldFit:
    """A fitted field circle with the cues that say how much it looks like a camera field.

    Coordinates are pixels of the image the field was found in (x right, y down, pixel centres
    at integers).
    """

    cx: float
    cy: float
    radius: float
    circularity: float  # fraction of free outline points within 2 % of the radius of the circle
    iou: float  # overlap (intersection over union) of the bright blob and the circle in the frame
    surround_ratio: float  # mean brightness just outside the circle / just inside (0 = black)
    surround_step: float  # mean brightness just inside minus just outside, DN


def brightest_channel(rgb: np.ndarray) -> np.ndarray:
    """Per-pixel maximum over the colour channels (uint8 HxW)."""
    if rgb.ndim == 2:
        return rgb
    return np.maximum(np.maximum(rgb[..., 0], rgb[..., 1]), rgb[..., 2])  # faster than .max()


def _outline_points(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The filled largest blob of ``mask`` and its outline points off the frame edge."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count < 2:
        return None
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    blob = (labels == largest).astype(np.uint8)
    contours, _ = cv2.findContours(blob, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return None
    contour = max(contours, key=cv2.contourArea)
    filled = np.zeros_like(blob)
    cv2.drawContours(filled, [contour], -1, 1, thickness=-1)
    pts = contour.reshape(-1, 2).astype(np.float64)
    h, w = mask.shape
    free = (pts[:, 0] > 1) & (pts[:, 0] < w - 2) & (pts[:, 1] > 1) & (pts[:, 1] < h - 2)
    return filled, pts[free]


def _fit_circle(pts: np.ndarray) -> tuple[float, float, float] | None:
    """Algebraic least-squares circle (Kasa) through ``pts`` (N x 2)."""
    x, y = pts[:, 0], pts[:, 1]
    design = np.stack([x, y, np.ones_like(x)], axis=1)
    target = -(x * x + y * y)
    try:
        (d, e, f), *_ = np.linalg.lstsq(design, target, rcond=None)
    except np.linalg.LinAlgError:
        return None
    cx, cy = -d / 2.0, -e / 2.0
    r2 = cx * cx + cy * cy - f
    if not np.isfinite(r2) or r2 <= 0:
        return None
    return float(cx), float(cy), float(np.sqrt(r2))


def _robust_circle(pts: np.ndarray) -> tuple[float, float, float] | None:
    """Circle fit that drops outline points far from the current circle, a few rounds."""
    keep = pts
    fit = _fit_circle(keep)
    for _ in range(4):
        if fit is None:
            return None
        cx, cy, r = fit
        resid = np.hypot(pts[:, 0] - cx, pts[:, 1] - cy) - r
        spread = 1.4826 * float(np.median(np.abs(resid - np.median(resid))))
        inliers = np.abs(resid) <= max(1.5, 3.0 * spread, 0.01 * r)
        if inliers.sum() < _MIN_POINTS or inliers.sum() == len(keep):
            break
        keep = pts[inliers]
        fit = _fit_circle(keep)
    return fit


def _ring_mean(values: np.ndarray, dist: np.ndarray, lo: float, hi: float) -> float | None:
    ring = (dist >= lo) & (dist <= hi)
    if int(ring.sum()) < 8:
        return None
    return float(values[ring].mean())


def find_field(rgb: np.ndarray) -> FieldFit | None:
    """The camera field of an RGB (or greyscale) uint8 image, or None when there is none.

    Works at whatever scale it is given; the gate passes an image about 640 pixels across.
    """
    bright = brightest_channel(rgb)
    h, w = bright.shape
    if min(h, w) < 8:
        return None
    smooth = cv2.medianBlur(np.ascontiguousarray(bright), 3)
    dark = float(np.percentile(smooth, 2))
    light = float(np.percentile(smooth, 98))
    if light - dark < 8.0:
        return None
    level = dark + max(5.0, 0.1 * (light - dark))
    raw = (smooth > level).astype(np.uint8)
    mask = np.asarray(cv2.morphologyEx(raw, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8)))
    found = _outline_points(mask)
    if found is None or len(found[1]) < _MIN_POINTS:
        return None
    blob, pts = found
    fit = _robust_circle(pts)
    if fit is None:
        return None
    cx, cy, radius = fit
    radius += 0.5  # outline points are the centres of the outermost field pixels
    if not (_MIN_RADIUS_PX <= radius <= 4.0 * max(h, w)) or not np.isfinite([cx, cy]).all():
        return None
    resid = np.abs(np.hypot(pts[:, 0] - cx, pts[:, 1] - cy) - (radius - 0.5))
    circularity = float(np.mean(resid <= max(1.5, 0.02 * radius)))
    ys = np.arange(h, dtype=np.float32)[:, None] - np.float32(cy)
    xs = np.arange(w, dtype=np.float32)[None, :] - np.float32(cx)
    dist = np.sqrt(xs * xs + ys * ys)
    disc = dist <= radius
    union = int(np.count_nonzero(disc | (blob > 0)))
    iou = float(np.count_nonzero(disc & (blob > 0)) / union) if union else 0.0
    inside = _ring_mean(smooth, dist, 0.80 * radius, 0.95 * radius)
    outside = _ring_mean(smooth, dist, 1.04 * radius + 1.0, 1.15 * radius + 2.0)
    if inside is None or outside is None:
        ratio, step = 1.0, 0.0
    else:
        ratio = outside / inside if inside > 0 else 1.0
        step = inside - outside
    return FieldFit(
        cx=cx,
        cy=cy,
        radius=radius,
        circularity=circularity,
        iou=iou,
        surround_ratio=float(ratio),
        surround_step=float(step),
    )


def field_coverage(cx: float, cy: float, radius: float, width: int, height: int) -> float:
    """Fraction of the circle's area that lies inside a ``width`` x ``height`` frame."""
    if radius <= 0:
        return 0.0
    n = 96
    u = (np.arange(n) + 0.5) / n * 2.0 - 1.0
    gx, gy = np.meshgrid(u, u)
    in_circle = gx * gx + gy * gy <= 1.0
    px, py = cx + gx * radius, cy + gy * radius
    in_frame = (px >= -0.5) & (px <= width - 0.5) & (py >= -0.5) & (py <= height - 0.5)
    return float(np.count_nonzero(in_circle & in_frame) / np.count_nonzero(in_circle))
