"""Binning a device's large B-scans to the resolution the baseline was validated at."""

from __future__ import annotations

import numpy as np
import pytest

from appliance.inference.oct.prepare import bin_volume


def test_large_b_scans_are_averaged_down_keeping_the_geometry() -> None:
    volume = np.zeros((3, 496, 512), np.uint8)
    volume[:, 100:102, :] = 200  # a bright line over rows 100 and 101
    spacing = (0.125, 1.92 / 496, 6.0 / 511)
    binned = bin_volume(volume, spacing)
    assert binned.volume.shape == (3, 248, 256) and binned.volume.dtype == np.uint8
    assert (binned.row_factor, binned.ascan_factor) == (2, 2)
    assert binned.spacing_mm == pytest.approx((0.125, 2 * 1.92 / 496, 2 * 6.0 / 511))
    assert (binned.volume[:, 50, :] == 200).all() and (binned.volume[:, 49, :] == 0).all()
    assert binned.to_original_rows(np.array([50.0]))[0] == 100.5  # the line's centre
    stretched = binned.to_original_ascans(np.arange(256, dtype=float), 512)
    assert stretched.shape == (512,) and stretched[1] == pytest.approx(0.25)


def test_small_b_scans_are_left_alone() -> None:
    volume = np.ones((3, 248, 256), np.uint8)
    binned = bin_volume(volume, (0.125, 0.0077, 0.0235))
    assert binned.volume is volume and binned.spacing_mm == (0.125, 0.0077, 0.0235)
    with pytest.raises(ValueError, match="frames, rows, A-scans"):
        bin_volume(np.ones((4, 4), np.uint8), (1.0, 1.0, 1.0))


def test_positions_map_back_through_the_even_cut() -> None:
    """515 rows and 770 A-scans do not fill whole bins of 3 and 4: one row and one A-scan are
    cut at the start before binning, so binned row ``k`` is the mean of rows 3k+1..3k+3 and
    maps back to their centre, 3k+2 (and A-scan ``j`` to 4j+1+1.5)."""
    volume = np.zeros((2, 515, 770), np.uint8)
    volume[:, 31:34, :] = 200  # exactly the rows binned row 10 averages
    volume[:, :, 41:45] = 100  # exactly the A-scans binned A-scan 10 averages
    binned = bin_volume(volume, (0.125, 0.004, 0.008))
    assert (binned.row_factor, binned.ascan_factor) == (3, 4)
    assert binned.volume.shape == (2, 171, 192)
    assert (binned.volume[:, 10, :8] == 200).all() and (binned.volume[:, 9, :8] == 0).all()
    assert (binned.volume[:, 20:, 10] == 100).all() and (binned.volume[:, 20:, 11] == 0).all()
    assert binned.to_original_rows(np.array([10.0]))[0] == 32.0  # the bright rows' centre
    stretched = binned.to_original_ascans(np.arange(192, dtype=float), 770)
    assert stretched[42] == pytest.approx(9.875) and stretched[43] == pytest.approx(10.125)
