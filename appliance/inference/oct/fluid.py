"""A first fluid detector: dark pockets inside the retina, pure numpy/OpenCV (classical baseline).

Each B-scan is smoothed (speckle), corrected for vessel shadows (each A-scan divided by its
RPE brightness over the lateral trend) and normalised between the vitreous level (above the
ILM) and the RPE band's level. Inside the retina (from 15 µm below the ILM to the top of the
RPE band, 32 µm above its outer boundary) pixels darker than :data:`DARK_LEVEL` are fluid
candidates; a morphological opening and a minimum area per B-scan remove speckle pockets.
Intraretinal cysts and subretinal fluid both look like this, so the detector does not tell
them apart. The probability-like score of fluid in the central subfield is
``1 - exp(-area / AREA_SCALE_MM2)`` over the en-face area of fluid within 0.5 mm of the fovea.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import cv2
import numpy as np

LOGGER = logging.getLogger(__name__)

DARK_LEVEL = 0.08  # normalised (vitreous 0, RPE band 1)
MIN_AREA_UM2 = 1500.0  # per B-scan component (e.g. 40 µm x 40 µm)
AREA_SCALE_MM2 = 0.01  # en-face area for a score of 1 - 1/e
TOP_MARGIN_UM = 15.0
RPE_BAND_UM = 32.0
SMOOTH_UM = (60.0, 11.0)  # Gaussian sigma along A-scans and along depth (speckle)


@dataclass(frozen=True)
class FluidResult:
    """Fluid found in one volume."""

    mask: np.ndarray  # bool (frames, rows, A-scans)
    volume_mm3: float
    centre_area_mm2: float  # en-face area within 0.5 mm of the fovea
    p_centre: float  # probability-like score of fluid in the central subfield
    p_any: float  # the same over the whole scan


def _score(area_mm2: float) -> float:
    return float(1.0 - math.exp(-area_mm2 / AREA_SCALE_MM2))


def large_components(found: np.ndarray, min_px: float) -> np.ndarray:
    """The 8-connected components of the uint8 mask ``found`` of at least ``min_px`` pixels."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(found, connectivity=8)
    keep = np.zeros(n, dtype=bool)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_px
    return np.asarray(keep[labels])


def fluid_result(
    mask: np.ndarray, spacing_mm: tuple[float, float, float], fovea_mm: tuple[float, float]
) -> FluidResult:
    """The scores of a fluid ``mask`` (frames, rows, A-scans): its volume, its en-face area
    within 0.5 mm of the fovea and over the whole scan, each area as a probability-like score."""
    frame_mm, axial_mm, lateral_mm = spacing_mm
    f_total, _, ascans = mask.shape
    footprint = mask.any(axis=1)  # (frames, A-scans)
    ys = (np.arange(f_total) - (f_total - 1) / 2.0)[:, None] * frame_mm
    xs = (np.arange(ascans) - (ascans - 1) / 2.0)[None, :] * lateral_mm
    centre = np.hypot(xs - fovea_mm[0], ys - fovea_mm[1]) <= 0.5
    cell = frame_mm * lateral_mm
    centre_area = float((footprint & centre).sum() * cell)
    return FluidResult(
        mask=mask,
        volume_mm3=float(mask.sum() * cell * axial_mm),
        centre_area_mm2=centre_area,
        p_centre=_score(centre_area),
        p_any=_score(float(footprint.sum() * cell)),
    )


def detect_fluid(
    volume: np.ndarray,
    ilm_px: np.ndarray,
    rpe_px: np.ndarray,
    spacing_mm: tuple[float, float, float],
    fovea_mm: tuple[float, float],
) -> FluidResult:
    """Fluid mask and scores; boundaries as from :func:`segment_volume` (NaN = blank B-scan)."""
    _, axial_mm, lateral_mm = spacing_mm
    f_total, rows, _ = volume.shape
    um = axial_mm * 1000.0
    mask = np.zeros(volume.shape, dtype=bool)
    r = np.arange(rows, dtype=np.float64)[:, None]
    min_px = MIN_AREA_UM2 / (um * lateral_mm * 1000.0)
    kernel = np.ones((3, 3), np.uint8)
    sigma = (SMOOTH_UM[0] / (lateral_mm * 1000.0), SMOOTH_UM[1] / um)
    for f in range(f_total):
        ilm, rpe = ilm_px[f], rpe_px[f]
        if not (np.isfinite(ilm).all() and np.isfinite(rpe).all()):
            continue
        img = cv2.GaussianBlur(
            volume[f].astype(np.float32), (0, 0), sigmaX=sigma[0], sigmaY=sigma[1]
        )
        band = (r >= rpe[None, :] - 24.0 / um) & (r < rpe[None, :])
        level = np.where(band, img, np.nan)
        rpe_level = np.nanmedian(level, axis=0)
        rpe_level = np.where(np.isfinite(rpe_level), rpe_level, np.nanmedian(rpe_level))
        trend = cv2.GaussianBlur(rpe_level[None, :].astype(np.float32), (0, 0), sigmaX=25.0)[0]
        transmission = np.clip(rpe_level / np.maximum(trend, 1e-3), 0.25, 1.2)
        vitreous = (r < ilm[None, :] - 5.0) & (r >= ilm[None, :] - 40.0)
        bg = float(np.median(img[vitreous])) if vitreous.any() else float(np.percentile(img, 5))
        top = float(np.median(trend))
        below_vessels = r >= ilm[None, :] + 40.0 / um
        corrected = np.where(below_vessels, img / transmission[None, :], img)
        norm = (corrected - bg) / max(top - bg, 1e-3)
        inside = (r >= ilm[None, :] + TOP_MARGIN_UM / um) & (r < rpe[None, :] - RPE_BAND_UM / um)
        dark = (inside & (norm < DARK_LEVEL)).astype(np.uint8)
        dark = cv2.morphologyEx(dark, cv2.MORPH_OPEN, kernel)
        mask[f] = large_components(dark, min_px)
    return fluid_result(mask, spacing_mm, fovea_mm)
