"""The report's OCT pictures: the thickness map resampled to square pixels, coloured, grey where
not measured, with the ETDRS circles on the fovea; the B-scan with its boundaries drawn."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from appliance.dicom.oct_pictures import (
    GRID_RGB,
    ILM_RGB,
    NOT_MEASURED_RGB,
    RPE_RGB,
    bscan_rgb,
    colour_scale,
    png_bytes,
    thickness_map_rgb,
)

SPACING = (0.12, 0.0117)


def test_thickness_map_has_square_pixels_colour_grey_holes_and_the_grid() -> None:
    thickness = np.full((49, 512), 300.0)
    thickness[:, :40] = np.nan  # not measured on the left edge
    rgb = thickness_map_rgb(thickness, SPACING, fovea_mm=(0.5, 0.0), mm_per_px=0.02)
    height_mm, width_mm = 49 * 0.12, 512 * 0.0117
    assert rgb.dtype == np.uint8 and rgb.shape[2] == 3
    assert rgb.shape[0] == round(height_mm / 0.02) and rgb.shape[1] == round(width_mm / 0.02)
    assert tuple(rgb[rgb.shape[0] // 2, 2]) == NOT_MEASURED_RGB
    centre_row = rgb.shape[0] // 2
    centre_column = round((width_mm / 2 + 0.5) / 0.02)
    for radius_mm in (0.5, 1.5, 3.0):  # the 1, 3 and 6 mm circles around the fovea
        column = centre_column + round(radius_mm / 0.02)
        ring = rgb[centre_row - 1 : centre_row + 2, column - 1 : column + 2].reshape(-1, 3)
        if column < rgb.shape[1]:
            assert any(tuple(p) == GRID_RGB for p in ring), radius_mm
    assert tuple(rgb[centre_row, centre_column]) != GRID_RGB  # the centre itself is coloured


def test_colour_goes_from_blue_to_red_and_nan_is_grey() -> None:
    rgb = colour_scale(np.array([100.0, 325.0, 600.0, np.nan]), 200.0, 450.0)
    thin, middle, thick, missing = (tuple(int(c) for c in p) for p in rgb)
    assert thin[2] > thin[0] and thick[0] > thick[2]  # blue for thin, red for thick
    assert middle[1] > middle[0] and middle[1] > middle[2]  # green in the middle
    assert missing == NOT_MEASURED_RGB


def test_bscan_draws_the_boundaries_where_they_are() -> None:
    frame = np.random.default_rng(2).random((200, 64)) * 100
    ilm = np.full(64, 50.0)
    rpe = np.full(64, 150.0)
    rpe[10] = np.nan  # not found in one A-scan
    fluid = np.zeros((200, 64), bool)
    fluid[90:100, 30:40] = True
    rgb = bscan_rgb(frame, ilm, rpe, fluid)
    assert rgb.shape == (200, 64, 3)
    assert tuple(rgb[50, 5]) == ILM_RGB and tuple(rgb[150, 5]) == RPE_RGB
    assert tuple(rgb[150, 10]) != RPE_RGB
    assert rgb[95, 35, 2] > rgb[95, 35, 0]  # fluid tinted blue
    back = np.asarray(Image.open(io.BytesIO(png_bytes(rgb))))
    assert np.array_equal(back, rgb)


def test_bad_pictures_are_refused() -> None:
    with pytest.raises(ValueError, match="2-D"):
        thickness_map_rgb(np.zeros(5), SPACING)
    with pytest.raises(ValueError, match="positive"):
        thickness_map_rgb(np.zeros((4, 4)), (0.0, 0.1))
    with pytest.raises(ValueError, match="one row per A-scan"):
        bscan_rgb(np.zeros((10, 8)), ilm_px=np.zeros(7))
    with pytest.raises(ValueError, match="RGB uint8"):
        png_bytes(np.zeros((4, 4)))
