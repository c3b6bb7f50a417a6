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


def even_cut(size: int, factor: int) -> int:
    """Original rows (or A-scans) left out before the first bin: the ``size % factor`` that do
    not fill a whole bin are cut evenly, the odd one at the far end."""
    return (size - (size // factor) * factor) // 2


def original_position(binned: np.ndarray, factor: int, size: int) -> np.ndarray:
    """Binned positions (bin ``i`` centred on ``i``) in the original ``size`` rows or A-scans:
    the centre of the ``factor`` originals each bin averaged, after :func:`even_cut`."""
    return even_cut(size, factor) + binned * factor + (factor - 1) / 2.0


@dataclass(frozen=True)
class Binned:
    volume: np.ndarray  # uint8 (frames, rows / row_factor, A-scans / ascan_factor)
    spacing_mm: tuple[float, float, float]  # (between B-scans, axial, lateral) after binning
    row_factor: int
    ascan_factor: int
    original_shape: tuple[int, int]  # (rows, A-scans) before binning

    def to_original_rows(self, rows: np.ndarray) -> np.ndarray:
        """Binned row positions (row ``i`` centred on ``i``) in the original rows."""
        return original_position(rows, self.row_factor, self.original_shape[0])

    def to_original_ascans(self, values: np.ndarray, ascans: int) -> np.ndarray:
        """A per-A-scan array of the binned volume stretched back to ``ascans`` A-scans."""
        if self.ascan_factor == 1:
            return values
        binned = original_position(np.arange(values.shape[-1]), self.ascan_factor, ascans)
        return np.interp(np.arange(ascans), binned, values)


def _bin_frame(frame: np.ndarray, row_factor: int, ascan_factor: int) -> np.ndarray:
    rows = (frame.shape[0] // row_factor) * row_factor
    ascans = (frame.shape[1] // ascan_factor) * ascan_factor
    top, left = even_cut(frame.shape[0], row_factor), even_cut(frame.shape[1], ascan_factor)
    cut = frame[top : top + rows, left : left + ascans].astype(np.float32)
    shape = (rows // row_factor, row_factor, ascans // ascan_factor, ascan_factor)
    return np.asarray(cut.reshape(shape).mean(axis=(1, 3)))


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
        return Binned(volume, spacing_mm, 1, 1, (volume.shape[1], volume.shape[2]))
    out = np.empty(
        (volume.shape[0], volume.shape[1] // row_factor, volume.shape[2] // ascan_factor),
        dtype=np.uint8,
    )
    for index, frame in enumerate(volume):  # one frame at a time: memory stays small
        out[index] = np.clip(np.round(_bin_frame(frame, row_factor, ascan_factor)), 0, 255)
    frame_mm, axial_mm, lateral_mm = spacing_mm
    return Binned(out, (frame_mm, axial_mm * row_factor, lateral_mm * ascan_factor),
                  row_factor, ascan_factor, (volume.shape[1], volume.shape[2]))  # fmt: skip
