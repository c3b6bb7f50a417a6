"""Pictures of an OCT for the report, pure numpy: the thickness map in colour with the ETDRS
circles, and a B-scan with its layer boundaries drawn.

The thickness map is (B-scans, A-scans) in µm, B-scan 0 superior and the A-scan index growing
to the viewer's right (as ``inference/oct/etdrs.py`` measures it); the picture is resampled to
square pixels so circles stay round, coloured from blue (thin) through green and yellow to red
(thick) between ``low_um`` and ``high_um``, grey where not measured, with the ETDRS 1, 3 and
6 mm circles and the diagonals between the 1 and 6 mm circles centred on the fovea.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

# blue → cyan → green → yellow → red, at 0, ¼, ½, ¾, 1 of the range
_STOPS = np.array(
    [[40, 60, 200], [40, 190, 220], [60, 190, 70], [240, 220, 50], [220, 40, 40]], np.float64
)
NOT_MEASURED_RGB = (150, 150, 150)
GRID_RGB = (255, 255, 255)
ETDRS_RADII_MM = (0.5, 1.5, 3.0)
ILM_RGB = (230, 40, 40)
RPE_RGB = (40, 200, 70)
FLUID_RGB = (60, 120, 255)


def colour_scale(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Values → RGB uint8 along the blue-to-red scale; NaN → grey."""
    t = np.clip((np.asarray(values, np.float64) - low) / max(high - low, 1e-9), 0.0, 1.0)
    t = np.nan_to_num(t, nan=0.0) * (len(_STOPS) - 1)
    index = np.minimum(t.astype(int), len(_STOPS) - 2)
    frac = (t - index)[..., None]
    rgb = _STOPS[index] * (1.0 - frac) + _STOPS[index + 1] * frac
    rgb[~np.isfinite(values)] = NOT_MEASURED_RGB
    return np.rint(rgb).astype(np.uint8)


def thickness_map_rgb(
    thickness_um: np.ndarray,
    spacing_mm: tuple[float, float],
    fovea_mm: tuple[float, float] | None = None,
    *,
    low_um: float = 200.0,
    high_um: float = 450.0,
    mm_per_px: float = 0.02,
) -> np.ndarray:
    """The map as an RGB picture with square pixels and the ETDRS grid (see the module
    docstring); ``fovea_mm`` (x, y) from the scan centre, x right, y down (None: the centre)."""
    values = np.asarray(thickness_um, np.float64)
    if values.ndim != 2 or 0 in values.shape:
        raise ValueError(f"the thickness map must be 2-D, got shape {values.shape}")
    row_mm, column_mm = (float(s) for s in spacing_mm)
    if row_mm <= 0 or column_mm <= 0 or mm_per_px <= 0:
        raise ValueError("spacings must be positive")
    height_mm, width_mm = values.shape[0] * row_mm, values.shape[1] * column_mm
    rows = max(1, min(2000, round(height_mm / mm_per_px)))
    columns = max(1, min(2000, round(width_mm / mm_per_px)))
    y_mm = (np.arange(rows) + 0.5) * height_mm / rows
    x_mm = (np.arange(columns) + 0.5) * width_mm / columns
    source_rows = np.minimum((y_mm / row_mm).astype(int), values.shape[0] - 1)
    source_columns = np.minimum((x_mm / column_mm).astype(int), values.shape[1] - 1)
    rgb = colour_scale(values[np.ix_(source_rows, source_columns)], low_um, high_um)
    fx, fy = fovea_mm or (0.0, 0.0)
    dx = x_mm[None, :] - (width_mm / 2 + fx)
    dy = y_mm[:, None] - (height_mm / 2 + fy)
    distance = np.hypot(dx, dy)
    line = max(mm_per_px * 0.75, 0.015)
    grid = np.zeros(distance.shape, bool)
    for radius in ETDRS_RADII_MM:
        grid |= np.abs(distance - radius) <= line
    between = (distance >= ETDRS_RADII_MM[0]) & (distance <= ETDRS_RADII_MM[-1])
    grid |= between & (np.abs(np.abs(dx) - np.abs(dy)) <= line * np.sqrt(2))
    rgb[grid] = GRID_RGB
    return rgb


def _grey(frame: np.ndarray) -> np.ndarray:
    values = np.asarray(frame, np.float64)
    if values.ndim != 2 or 0 in values.shape:
        raise ValueError(f"a B-scan must be 2-D (rows, A-scans), got shape {values.shape}")
    low, high = np.nanpercentile(values, 1), np.nanpercentile(values, 99.5)
    scaled = np.clip((values - low) / max(high - low, 1e-9), 0.0, 1.0)
    return np.rint(np.nan_to_num(scaled) * 255).astype(np.uint8)


def bscan_rgb(
    bscan: np.ndarray,
    ilm_px: np.ndarray | None = None,
    rpe_px: np.ndarray | None = None,
    fluid_mask: np.ndarray | None = None,
) -> np.ndarray:
    """One B-scan (rows, A-scans) in grey with the ILM (red) and RPE (green) boundaries (row
    per A-scan, NaN where not found) and fluid (blue tint) drawn on it."""
    grey = _grey(bscan)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    rows, columns = grey.shape
    if fluid_mask is not None:
        mask = np.asarray(fluid_mask, bool)
        if mask.shape != grey.shape:
            raise ValueError(f"fluid mask shape {mask.shape} is not the B-scan's {grey.shape}")
        rgb[mask] = (0.5 * rgb[mask] + 0.5 * np.array(FLUID_RGB)).astype(np.uint8)
    for boundary, colour in ((ilm_px, ILM_RGB), (rpe_px, RPE_RGB)):
        if boundary is None:
            continue
        line = np.asarray(boundary, np.float64)
        if line.shape != (columns,):
            raise ValueError(f"a boundary needs one row per A-scan ({columns}), got {line.shape}")
        found = np.isfinite(line)
        at = np.clip(np.rint(line[found]).astype(int), 0, rows - 1)
        for offset in (-1, 0, 1):  # three pixels thick, to survive the print-size JPEG
            rgb[np.clip(at + offset, 0, rows - 1), np.flatnonzero(found)] = colour
    return rgb


def png_bytes(rgb: np.ndarray) -> bytes:
    """An RGB uint8 array as PNG bytes (what the report's picture slots take)."""
    array = np.asarray(rgb)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 array, got {array.dtype} {array.shape}")
    out = io.BytesIO()
    Image.fromarray(array).save(out, "PNG")
    return out.getvalue()
