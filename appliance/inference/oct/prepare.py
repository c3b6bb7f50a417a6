"""Pre-processing before measurement (pure numpy): a volume binned to the resolution the
classical baseline was validated at.

The baseline's figures (README "OCT", docs/synth/oct.md) are on B-scans of at most about 256
rows and 256 A-scans over 6 mm x 1.9 mm (the ``compact`` scan pattern); a device's 496 x 512 or
1024 x 512 B-scans are averaged over ``factor`` neighbouring rows and A-scans down to that size.
Averaging keeps the physical geometry (the spacing grows by the factor, the scan centre stays
where it was) and lowers speckle; the measurement then costs a quarter or less.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MAX_ROWS = 256
MAX_ASCANS = 256


@dataclass(frozen=True)
class Binned:
    volume: np.ndarray  # uint8 (frames, rows / row_factor, A-scans / ascan_factor)
    spacing_mm: tuple[float, float, float]  # (between B-scans, axial, lateral) after binning
    row_factor: int
    ascan_factor: int

    def to_original_rows(self, rows: np.ndarray) -> np.ndarray:
        """Binned row positions (row ``i`` centred on ``i``) in the original rows."""
        return rows * self.row_factor + (self.row_factor - 1) / 2.0

    def to_original_ascans(self, values: np.ndarray, ascans: int) -> np.ndarray:
        """A per-A-scan array of the binned volume stretched back to ``ascans`` A-scans."""
        if self.ascan_factor == 1:
            return values
        binned = np.arange(values.shape[-1]) * self.ascan_factor + (self.ascan_factor - 1) / 2.0
        return np.interp(np.arange(ascans), binned, values)


def _bin(volume: np.ndarray, axis: int, factor: int) -> np.ndarray:
    if factor == 1:
        return volume
    keep = (volume.shape[axis] // factor) * factor
    start = (volume.shape[axis] - keep) // 2  # an odd remainder is cut evenly from both sides
    cut = np.take(volume, np.arange(start, start + keep), axis=axis).astype(np.float32)
    shape = list(cut.shape)
    shape[axis : axis + 1] = [keep // factor, factor]
    return cut.reshape(shape).mean(axis=axis + 1)


def bin_volume(
    volume: np.ndarray,
    spacing_mm: tuple[float, float, float],
    max_rows: int = MAX_ROWS,
    max_ascans: int = MAX_ASCANS,
) -> Binned:
    """``volume`` (frames, rows, A-scans) averaged down to at most ``max_rows`` x ``max_ascans``
    per B-scan (whole factors), with its new spacing."""
    if volume.ndim != 3:
        raise ValueError(f"expected a (frames, rows, A-scans) volume, got shape {volume.shape}")
    row_factor = max(1, math.ceil(volume.shape[1] / max_rows))
    ascan_factor = max(1, math.ceil(volume.shape[2] / max_ascans))
    if row_factor == ascan_factor == 1:
        return Binned(volume, spacing_mm, 1, 1)
    binned = _bin(_bin(volume, 1, row_factor), 2, ascan_factor)
    out = np.clip(np.round(binned), 0, 255).astype(np.uint8)
    frame_mm, axial_mm, lateral_mm = spacing_mm
    return Binned(out, (frame_mm, axial_mm * row_factor, lateral_mm * ascan_factor),
                  row_factor, ascan_factor)  # fmt: skip
