"""Finding the camera field in a fundus photograph, whatever the camera did to its outline.

A fundus camera images the retina through a round field stop: a bright disc on a dark
surround. Real exports cut that disc: the sensor cuts it at the top and bottom (many Topcon,
Canon and Zeiss cameras), an export crops it to a rectangle, a notch marks the field stop, the
surround is not quite black or is noisy. :func:`find_field` models the field as a circle
intersected with an axis-aligned rectangle (the frame, or a crop inside it):

1. the bright blob: the brightest channel above a level set from the surround (its darkest
   pixels and the noise in the frame border), closed and hole-filled so that dark pathology or
   pigment inside the field does not break it;
2. its outline, split into points on the frame edge, points on long horizontal or vertical
   straight runs (crop edges), and the curved rest;
3. a circle fitted robustly (RANSAC, then least squares on the inliers) to the curved points only,
   when they span enough of a circle; otherwise the field is the blob's bounding rectangle and
   the circle is the one circumscribing it.

The fit yields the shape cues the gate uses to tell a fundus photograph from other pictures:
how much of the outline the circle-plus-straight-edges model explains, how well the blob fills
the model, and how dark the surround is.
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
    """A fitted field (circle ∩ rectangle) with the cues that say how much it looks like one.

    Coordinates are pixels of the image the field was found in (x right, y down, pixel centres
    at integers). ``crop`` is the rectangle (x0, y0, x1, y1, inclusive pixel bounds) the field
    is cut to: the frame itself, or a crop's edges found inside it.
    """

    cx: float
    cy: float
    radius: float
    circularity: float  # share of the free outline explained by the circle or straight crop edges
    iou: float  # overlap of the bright blob with circle ∩ crop (intersection over union)
    surround_ratio: float  # mean brightness just outside the field / just inside (0 = black)
    surround_step: float  # mean brightness just inside minus just outside, DN
    crop: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    has_circle: bool = True  # False: no arc to fit, the field is the crop rectangle
    has_surround: bool = True  # False: the field fills the frame, no surround to judge


def brightest_channel(rgb: np.ndarray) -> np.ndarray:
    """Per-pixel maximum over the colour channels (uint8 HxW)."""
    if rgb.ndim == 2:
        return rgb
    return np.maximum(np.maximum(rgb[..., 0], rgb[..., 1]), rgb[..., 2])  # faster than .max()


def _blob(mask: np.ndarray) -> np.ndarray | None:
    """The largest 8-connected blob of ``mask`` with its holes filled (uint8 0/1)."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count < 2:
        return None
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    blob = (labels == largest).astype(np.uint8)
    contours, _ = cv2.findContours(blob, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return None
    filled = np.zeros_like(blob)
    cv2.drawContours(filled, [max(contours, key=cv2.contourArea)], -1, 1, thickness=-1)
    return filled


def _outline(blob: np.ndarray) -> np.ndarray:
    contours, _ = cv2.findContours(blob, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    contour = max(contours, key=cv2.contourArea)
    return np.asarray(contour.reshape(-1, 2), dtype=np.float64)


def _straight_runs(values: np.ndarray, min_run: int) -> np.ndarray:
    """Indices (into ``values``, integer coordinates) of points on a line holding at least
    ``min_run`` outline points: a horizontal or vertical edge, not a curve touching a row."""
    keys, counts = np.unique(values, return_counts=True)
    lines = keys[counts >= min_run]
    return np.isin(values, lines)


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


def _ransac_circle(pts: np.ndarray, tolerance: float) -> tuple[float, float, float] | None:
    """The circle through three outline points that most others lie on, refined by least
    squares on those inliers. Deterministic (a fixed generator), so one image, one answer."""
    rng = np.random.default_rng(0)
    n = len(pts)
    best: np.ndarray | None = None
    for _ in range(min(200, 4 * n)):
        trio = pts[rng.choice(n, 3, replace=False)]
        fit = _fit_circle(trio)
        if fit is None:
            continue
        cx, cy, r = fit
        inliers = np.abs(np.hypot(pts[:, 0] - cx, pts[:, 1] - cy) - r) <= max(tolerance, 0.01 * r)
        if best is None or inliers.sum() > best.sum():
            best = inliers
    if best is None or best.sum() < _MIN_POINTS:
        return None
    fit = _fit_circle(pts[best])
    for _ in range(3):  # least squares on the inliers of the refined circle
        if fit is None:
            return None
        cx, cy, r = fit
        inliers = np.abs(np.hypot(pts[:, 0] - cx, pts[:, 1] - cy) - r) <= max(tolerance, 0.01 * r)
        if inliers.sum() < _MIN_POINTS:
            break
        fit = _fit_circle(pts[inliers])
    return fit


def _arc_span(pts: np.ndarray, cx: float, cy: float) -> float:
    """How much of the full turn (0-1) the points cover around (cx, cy), in 10-degree bins."""
    angles = np.arctan2(pts[:, 1] - cy, pts[:, 0] - cx)
    bins = np.unique(np.floor((angles + np.pi) / (np.pi / 18.0)).astype(int) % 36)
    return len(bins) / 36.0


def _ring_mean(values: np.ndarray, ring: np.ndarray) -> float | None:
    if int(ring.sum()) < 8:
        return None
    return float(values[ring].mean())


def _level(smooth: np.ndarray) -> tuple[float, float, float] | None:
    """(level, dark, light): the blob threshold, set from the surround. The surround is the
    darkest part of the frame; its noise is read in the frame border, where a camera field
    leaves the surround, so a grey or noisy border does not join the field."""
    dark = float(np.percentile(smooth, 1))
    light = float(np.percentile(smooth, 99))
    if light - dark < 8.0:
        return None
    h, w = smooth.shape
    b = max(2, min(h, w) // 40)
    border = np.concatenate(
        [smooth[:b].ravel(), smooth[-b:].ravel(), smooth[:, :b].ravel(), smooth[:, -b:].ravel()]
    ).astype(np.float32)
    quiet = border[border <= dark + 0.08 * (light - dark)]
    noise = 0.0  # how far the surround's own noise reaches above its darkest (median + 4 MAD)
    if len(quiet) >= 0.2 * len(border):
        median = float(np.median(quiet))
        noise = median + 4.0 * 1.4826 * float(np.median(np.abs(quiet - median))) - dark
    level = dark + max(6.0, 0.03 * (light - dark), noise + 4.0)
    return level, dark, light


def find_field(rgb: np.ndarray) -> FieldFit | None:
    """The camera field of an RGB (or greyscale) uint8 image, or None when there is none.

    Works at whatever scale it is given; the gate passes an image about 640 pixels across.
    """
    bright = brightest_channel(rgb)
    h, w = bright.shape
    if min(h, w) < 8:
        return None
    smooth = cv2.medianBlur(np.ascontiguousarray(bright), 3 if min(h, w) < 64 else 5)
    found = _level(smooth)
    if found is None:
        return None
    level, _, _ = found
    raw = (smooth > level).astype(np.uint8)
    k = max(3, (min(h, w) // 50) | 1)  # bridges dark vessels and pigment at the field edge
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    closed = cv2.morphologyEx(raw, cv2.MORPH_CLOSE, disc)
    blob = _blob(np.asarray(cv2.morphologyEx(closed, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))))
    if blob is None:
        return None
    pts = _outline(blob)
    on_frame = (pts[:, 0] <= 1) | (pts[:, 0] >= w - 2) | (pts[:, 1] <= 1) | (pts[:, 1] >= h - 2)
    # A circle's flattest row holds ~2*sqrt(2r) points (~50 here); crop edges run much longer.
    min_run = max(8, int(0.15 * min(h, w)))
    xs_int, ys_int = np.rint(pts[:, 0]).astype(int), np.rint(pts[:, 1]).astype(int)
    straight = (_straight_runs(ys_int, min_run) | _straight_runs(xs_int, min_run)) & ~on_frame
    free = ~on_frame
    curved = pts[free & ~straight]
    ys, xs = np.nonzero(blob)
    box = (float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max()))
    # The crop rectangle: the frame, pulled in to any straight edge the outline runs along.
    crop = box if straight.any() else (0.0, 0.0, float(w - 1), float(h - 1))
    circle = None
    if len(curved) >= _MIN_POINTS:
        circle = _ransac_circle(curved, tolerance=max(1.5, 0.01 * min(h, w)))
        if circle is not None and _arc_span(curved, circle[0], circle[1]) < 0.2:
            circle = None  # a short arc pins no circle down
    has_circle = circle is not None
    if circle is None:
        if not (on_frame.all() or straight[free].mean() >= 0.6):
            return None  # neither arcs nor straight edges: a blob of some other shape
        cx, cy = (box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0
        radius = float(np.hypot(box[2] - box[0] + 1, box[3] - box[1] + 1)) / 2.0
    else:
        cx, cy, radius = circle
        radius += 0.5  # outline points are the centres of the outermost field pixels
    if not (_MIN_RADIUS_PX <= radius <= 4.0 * max(h, w)) or not np.isfinite([cx, cy]).all():
        return None
    if free.any():
        resid = np.abs(np.hypot(pts[free, 0] - cx, pts[free, 1] - cy) - (radius - 0.5))
        on_circle = (resid <= max(1.5, 0.02 * radius)) & has_circle
        circularity = float(np.mean(on_circle | straight[free]))
    else:
        circularity = 1.0  # the field fills the frame: nothing to explain
    iou = _iou(blob, cx, cy, radius, crop)
    ratio, step, has_surround = _surround(smooth, blob, radius, free)
    return FieldFit(
        cx=float(cx),
        cy=float(cy),
        radius=float(radius),
        circularity=circularity,
        iou=iou,
        surround_ratio=float(ratio),
        surround_step=float(step),
        crop=crop,
        has_circle=has_circle,
        has_surround=has_surround,
    )


def _iou(
    blob: np.ndarray, cx: float, cy: float, radius: float, crop: tuple[float, float, float, float]
) -> float:
    """Overlap of the fitted field (circle within the crop rectangle) with the bright blob."""
    h, w = blob.shape
    gy = np.arange(h, dtype=np.float32)[:, None] - np.float32(cy)
    gx = np.arange(w, dtype=np.float32)[None, :] - np.float32(cx)
    dist = np.sqrt(gx * gx + gy * gy)
    inside_crop = np.zeros((h, w), bool)
    inside_crop[int(crop[1]) : int(crop[3]) + 1, int(crop[0]) : int(crop[2]) + 1] = True
    model = (dist <= radius) & inside_crop
    union = int(np.count_nonzero(model | (blob > 0)))
    return float(np.count_nonzero(model & (blob > 0)) / union) if union else 0.0


def _surround(
    smooth: np.ndarray, blob: np.ndarray, radius: float, free: np.ndarray
) -> tuple[float, float, bool]:
    """Surround level: a band just outside the blob against a band just inside it. Returns
    (outside / inside, inside - outside, whether there is a surround to measure)."""
    band = max(2, int(0.05 * radius))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * band + 1, 2 * band + 1))
    grown = cv2.dilate(blob, kernel) > 0
    shrunk = cv2.erode(blob, kernel) > 0
    gap = cv2.dilate(blob, np.ones((3, 3), np.uint8)) > 0
    inside = _ring_mean(smooth, (blob > 0) & ~shrunk)
    outside = _ring_mean(smooth, grown & ~gap)
    has_surround = outside is not None and bool(free.mean() >= 0.1)
    if inside is None or outside is None or not has_surround:
        ratio, step = (0.0, 255.0) if not has_surround else (1.0, 0.0)
    else:
        ratio = outside / inside if inside > 0 else 1.0
        step = inside - outside
    return ratio, step, has_surround


def field_coverage(
    cx: float,
    cy: float,
    radius: float,
    width: int,
    height: int,
    crop: tuple[float, float, float, float] | None = None,
) -> float:
    """Fraction of the circle's area that lies inside a ``width`` x ``height`` frame and, when
    given, inside the ``crop`` rectangle (x0, y0, x1, y1, inclusive pixel bounds)."""
    if radius <= 0:
        return 0.0
    x0, y0, x1, y1 = crop if crop is not None else (0.0, 0.0, width - 1.0, height - 1.0)
    x0, y0 = max(x0, 0.0), max(y0, 0.0)
    x1, y1 = min(x1, width - 1.0), min(y1, height - 1.0)
    n = 96
    u = (np.arange(n) + 0.5) / n * 2.0 - 1.0
    gx, gy = np.meshgrid(u, u)
    in_circle = gx * gx + gy * gy <= 1.0
    px, py = cx + gx * radius, cy + gy * radius
    in_frame = (px >= x0 - 0.5) & (px <= x1 + 0.5) & (py >= y0 - 0.5) & (py <= y1 + 0.5)
    return float(np.count_nonzero(in_circle & in_frame) / np.count_nonzero(in_circle))
