"""A B-scan with its measured layers drawn: the picture the station shows and the report uses.

Pure numpy/OpenCV: :func:`draw_layers` turns one B-scan (rows x A-scans, uint8) and its ILM and
RPE boundaries (row per A-scan, NaN where not found) into an RGB picture, the ILM in green and
the RPE in magenta, optionally shrunk to ``width`` pixels.
"""

from __future__ import annotations

import cv2
import numpy as np

ILM_COLOUR = (0, 220, 90)
RPE_COLOUR = (235, 60, 235)


def _polyline(
    rgb: np.ndarray, rows: np.ndarray, colour: tuple[int, int, int], thickness: int
) -> None:
    columns = np.arange(rows.size)
    good = np.isfinite(rows)
    # one polyline per run of found A-scans, so a gap is not bridged by a straight line
    edges = np.flatnonzero(np.diff(np.concatenate(([0], good.astype(np.int8), [0]))))
    for start, stop in zip(edges[::2], edges[1::2], strict=True):
        if stop - start < 2:
            continue
        points = np.stack([columns[start:stop], rows[start:stop]], axis=1)
        cv2.polylines(rgb, [np.round(points).astype(np.int32)], False, colour, thickness)


def draw_layers(
    bscan: np.ndarray,
    ilm_px: np.ndarray,
    rpe_px: np.ndarray,
    width: int | None = None,
    thickness: int = 2,
) -> np.ndarray:
    """RGB uint8 of ``bscan`` with the ILM and RPE lines (``thickness`` px, wide enough to
    survive a JPEG thumbnail); ``width`` shrinks it (aspect kept)."""
    if bscan.ndim != 2:
        raise ValueError(f"expected one B-scan (rows, A-scans), got shape {bscan.shape}")
    if ilm_px.shape != (bscan.shape[1],) or rpe_px.shape != (bscan.shape[1],):
        raise ValueError("ilm_px and rpe_px must give one row per A-scan")
    grey = np.clip(np.asarray(bscan, dtype=np.float32), 0, 255).astype(np.uint8)
    rgb = np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))
    _polyline(rgb, np.asarray(ilm_px, dtype=np.float64), ILM_COLOUR, thickness)
    _polyline(rgb, np.asarray(rpe_px, dtype=np.float64), RPE_COLOUR, thickness)
    if width is not None and 0 < width < rgb.shape[1]:
        height = max(1, round(rgb.shape[0] * width / rgb.shape[1]))
        return np.asarray(cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA))
    return rgb
