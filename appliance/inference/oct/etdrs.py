"""Thickness map → fovea → ETDRS 9-subfield grid, pure numpy/OpenCV.

The thickness map is (frames, A-scans) in µm; frame 0 is superior and the A-scan index grows
to the viewer's right, so nasal is +x for a right eye and -x for a left eye. The map is first
resampled to an isotropic grid (the lateral spacing) by cubic interpolation across B-scans.
The fovea is the deepest point of a difference of Gaussians (0.1 mm minus 0.8 mm) of the map
within 2 mm of the scan centre, so a broad dome of fluid does not move it. Subfields: the
central 1 mm disc, the inner ring (1-3 mm) and outer ring (3-6 mm), each ring cut into
superior / nasal / inferior / temporal quadrants by the diagonals. Means are over the map's
points inside each subfield; the macular volume is the sum of subfield mean x subfield area
(the 6 mm disc, 28.27 mm²), as commercial devices report it.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from appliance.domain import ETDRS_SUBFIELDS

LOGGER = logging.getLogger(__name__)

RADII_MM = (0.5, 1.5, 3.0)
SUBFIELDS = ETDRS_SUBFIELDS
FOVEA_SEARCH_MM = 2.0


def subfield_area_mm2(name: str) -> float:
    """Exact area of one subfield in mm²."""
    if name == "central":
        return math.pi * RADII_MM[0] ** 2
    inner, outer = (RADII_MM[0], RADII_MM[1]) if name.startswith("inner") else RADII_MM[1:]
    return math.pi * (outer**2 - inner**2) / 4.0


@dataclass(frozen=True)
class EtdrsGrid:
    """Mean thickness (µm) per ETDRS subfield around ``centre_mm``; NaN where not scanned."""

    eye: str
    centre_mm: tuple[float, float]  # (x, y) from the scan centre
    thickness_um: dict[str, float] = field(default_factory=dict)
    coverage: dict[str, float] = field(default_factory=dict)  # share of the subfield scanned

    @property
    def cst_um(self) -> float:
        return self.thickness_um["central"]

    @property
    def volume_mm3(self) -> float:
        """Macular volume in the 6 mm disc: sum of mean thickness x area (NaN if any is NaN)."""
        return float(sum(self.thickness_um[n] * subfield_area_mm2(n) for n in SUBFIELDS) / 1000.0)

    def ring_mean_um(self, ring: str) -> float:
        """Area-weighted mean of the four ``inner`` or ``outer`` subfields."""
        if ring not in ("inner", "outer"):
            raise ValueError(f"ring must be 'inner' or 'outer', got {ring!r}")
        values = [self.thickness_um[n] for n in SUBFIELDS if n.startswith(ring)]
        return float(np.mean(values))


def subfield_labels(dx: np.ndarray, dy: np.ndarray, eye: str) -> np.ndarray:
    """Subfield index (into :data:`SUBFIELDS`, -1 outside 6 mm) of offsets (mm) from the fovea.

    ``dx`` grows to the viewer's right, ``dy`` downwards (inferior).
    """
    if eye not in ("R", "L"):
        raise ValueError(f"eye must be 'R' or 'L', got {eye!r}")
    r = np.hypot(dx, dy)
    angle = np.degrees(np.arctan2(-dy, dx))  # 0 = right, 90 = superior
    right = np.abs(angle) < 45.0
    left = np.abs(angle) > 135.0
    superior = (angle >= 45.0) & (angle <= 135.0)
    quadrant = np.where(superior, 0, np.where(right, 1, np.where(left, 3, 2)))  # S, right, I, left
    if eye == "L":  # nasal is on the left for a left eye
        quadrant = np.where(quadrant == 1, 3, np.where(quadrant == 3, 1, quadrant))
    # order in SUBFIELDS: superior, nasal, inferior, temporal -> quadrant 0, 1, 2, 3
    out = np.full(r.shape, -1, dtype=np.int64)
    out[r <= RADII_MM[2]] = 5 + quadrant[r <= RADII_MM[2]]
    out[r <= RADII_MM[1]] = 1 + quadrant[r <= RADII_MM[1]]
    out[r <= RADII_MM[0]] = 0
    return out


def isotropic(thickness: np.ndarray, spacing_mm: tuple[float, float]) -> tuple[np.ndarray, float]:
    """(frames, A-scans) map resampled across B-scans to the lateral spacing; NaN rows filled."""
    frame_mm, lateral_mm = spacing_mm
    t = np.array(thickness, dtype=np.float64)
    good = np.flatnonzero(np.isfinite(t).all(axis=1))
    if good.size == 0:
        raise ValueError("no B-scan has a complete thickness profile")
    frames = t.shape[0]
    height = (frames - 1) * frame_mm
    n = int(round(height / lateral_mm)) + 1
    yq = np.linspace(0.0, frames - 1, n)
    filled = np.empty_like(t)
    for a in range(t.shape[1]):
        filled[:, a] = np.interp(np.arange(frames), good, t[good, a])
    # cubic across B-scans: linear interpolation would fill the foveal pit in (biased thick)
    map_x = np.broadcast_to(np.arange(t.shape[1], dtype=np.float32)[None, :], (n, t.shape[1]))
    map_y = np.broadcast_to(yq.astype(np.float32)[:, None], (n, t.shape[1]))
    out = cv2.remap(
        filled.astype(np.float32),
        np.ascontiguousarray(map_x),
        np.ascontiguousarray(map_y),
        interpolation=cv2.INTER_CUBIC,
        borderMode=cv2.BORDER_REPLICATE,
    ).astype(np.float64)
    return out, height / (n - 1) if n > 1 else lateral_mm


def find_fovea(iso: np.ndarray, step_mm: float) -> tuple[float, float]:
    """(x, y) in mm from the map's centre of the foveal pit on an isotropic map."""
    img = iso.astype(np.float32)
    fine = cv2.GaussianBlur(img, (0, 0), sigmaX=0.1 / step_mm)
    broad = cv2.GaussianBlur(img, (0, 0), sigmaX=0.8 / step_mm)
    pit = fine - broad
    h, w = iso.shape
    ys = (np.arange(h) - (h - 1) / 2.0)[:, None] * step_mm
    xs = (np.arange(w) - (w - 1) / 2.0)[None, :] * step_mm
    pit = np.where(np.hypot(xs, ys) <= FOVEA_SEARCH_MM, pit, np.inf)
    iy, ix = np.unravel_index(int(np.argmin(pit)), pit.shape)
    # refine: centroid of the deepest part of the pit around the minimum
    win = max(1, int(round(0.15 / step_mm)))
    y0, y1, x0, x1 = max(0, iy - win), min(h, iy + win + 1), max(0, ix - win), min(w, ix + win + 1)
    patch = pit[y0:y1, x0:x1]
    weight = np.clip(np.nanmax(patch[np.isfinite(patch)]) - patch, 0, None)
    weight = np.where(np.isfinite(weight), weight, 0.0)
    total = float(weight.sum())
    if total <= 0:
        return float(xs[0, ix]), float(ys[iy, 0])
    cy = float((weight * ys[y0:y1, :1]).sum() / total)
    cx = float((weight * xs[:1, x0:x1]).sum() / total)
    return cx, cy


def etdrs_grid(
    iso: np.ndarray, step_mm: float, eye: str, centre_mm: tuple[float, float]
) -> EtdrsGrid:
    """ETDRS subfield means of an isotropic thickness map around ``centre_mm``."""
    h, w = iso.shape
    ys = (np.arange(h) - (h - 1) / 2.0)[:, None] * step_mm
    xs = (np.arange(w) - (w - 1) / 2.0)[None, :] * step_mm
    labels = subfield_labels(xs - centre_mm[0], ys - centre_mm[1], eye)
    thickness: dict[str, float] = {}
    coverage: dict[str, float] = {}
    for i, name in enumerate(SUBFIELDS):
        inside = (labels == i) & np.isfinite(iso)
        count = int(inside.sum())
        thickness[name] = float(iso[inside].mean()) if count else float("nan")
        coverage[name] = min(1.0, count * step_mm * step_mm / subfield_area_mm2(name))
    return EtdrsGrid(eye=eye, centre_mm=centre_mm, thickness_um=thickness, coverage=coverage)
