"""Where the fovea is: the darkest inner retina, pure numpy/OpenCV.

At the foveal centre the inner retinal layers (RNFL, GCL/IPL, INL, OPL) are absent, so the
band from 15 to 60 µm below the ILM is dark (outer nuclear layer) there and bright elsewhere
(nerve fibre and ganglion cell layers). The mean of that band per A-scan, resampled to an
isotropic grid and smoothed (0.15 mm), is deepest at the fovea; this holds when cysts or
subretinal fluid fill or lift the pit, where the thinnest-retina rule of
:func:`appliance.inference.oct.etdrs.find_fovea` goes wrong. A-scans cut off at the top of
the frame (and 0.3 mm around them) are left out of the search.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np

from appliance.inference.oct.etdrs import FOVEA_SEARCH_MM, isotropic

LOGGER = logging.getLogger(__name__)

BAND_UM = (15.0, 60.0)  # below the ILM
SMOOTH_MM = 0.15
CLIP_MARGIN_MM = 0.3  # keep the search this far from A-scans cut off at the top


def clipped_ascans(volume: np.ndarray) -> np.ndarray:
    """A-scans (frames, A-scans) with tissue in the first row: the retina is cut off above."""
    flat = volume.reshape(volume.shape[0], -1)
    lo = float(np.median(np.percentile(flat, 10.0, axis=1)))
    hi = float(np.median(np.percentile(flat, 99.5, axis=1)))
    top = cv2.GaussianBlur(volume[:, 0, :].astype(np.float32), (0, 0), sigmaX=2.5, sigmaY=0.1)
    return np.asarray(top > lo + 0.25 * (hi - lo))


def inner_band_map(volume: np.ndarray, ilm_px: np.ndarray, axial_mm: float) -> np.ndarray:
    """Mean intensity of the inner-retina band per A-scan, (frames, A-scans); NaN where the
    ILM is unknown."""
    um = axial_mm * 1000.0
    rows = np.arange(volume.shape[1], dtype=np.float64)[None, :, None]
    ilm = np.where(np.isfinite(ilm_px), ilm_px, -1e9)[:, None, :]
    band = (rows >= ilm + BAND_UM[0] / um) & (rows < ilm + BAND_UM[1] / um)
    total = (volume.astype(np.float32) * band).sum(axis=1)
    mean = total / np.maximum(band.sum(axis=1), 1)
    return np.where(np.isfinite(ilm_px), mean, np.nan)


def find_fovea_inner(
    volume: np.ndarray, ilm_px: np.ndarray, spacing_mm: tuple[float, float, float]
) -> tuple[float, float]:
    """(x, y) in mm from the scan centre of the darkest smoothed inner-retina band."""
    frame_mm, axial_mm, lateral_mm = spacing_mm
    iso, step = isotropic(inner_band_map(volume, ilm_px, axial_mm), (frame_mm, lateral_mm))
    smooth = cv2.GaussianBlur(iso.astype(np.float32), (0, 0), SMOOTH_MM / step)
    h, w = smooth.shape
    ys = (np.arange(h) - (h - 1) / 2.0)[:, None] * step
    xs = (np.arange(w) - (w - 1) / 2.0)[None, :] * step
    cut, _ = isotropic(clipped_ascans(volume).astype(np.float64), (frame_mm, lateral_mm))
    near_cut = (
        cv2.dilate(
            (cut > 0.01).astype(np.uint8),
            np.ones((3, 3), np.uint8),
            iterations=max(1, int(round(CLIP_MARGIN_MM / step))),
        )
        > 0
    )
    search = (np.hypot(xs, ys) <= FOVEA_SEARCH_MM) & ~near_cut
    smooth = np.where(search, smooth, np.inf)
    if not np.isfinite(smooth).any():
        return 0.0, 0.0
    iy, ix = np.unravel_index(int(np.argmin(smooth)), smooth.shape)
    return float(xs[0, ix]), float(ys[iy, 0])
