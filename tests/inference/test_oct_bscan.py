"""The B-scan picture: layers drawn where measured, gaps left open, shrunk on request."""

from __future__ import annotations

import numpy as np
import pytest

from appliance.inference.oct.bscan import ILM_COLOUR, RPE_COLOUR, draw_layers


def test_lines_lie_on_the_boundaries_and_gaps_stay_open() -> None:
    bscan = np.full((100, 120), 50, np.uint8)
    ilm = np.full(120, 30.0)
    rpe = np.full(120, 70.0)
    ilm[50:60] = np.nan  # not found there
    rgb = draw_layers(bscan, ilm, rpe, thickness=1)
    assert rgb.shape == (100, 120, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[30, 10]) == ILM_COLOUR and tuple(rgb[70, 10]) == RPE_COLOUR
    assert tuple(rgb[30, 55]) == (50, 50, 50)  # the gap is not bridged
    assert tuple(rgb[50, 10]) == (50, 50, 50)  # the picture itself untouched
    small = draw_layers(bscan, ilm, rpe, width=60)
    assert small.shape == (50, 60, 3)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="one B-scan"):
        draw_layers(np.zeros((2, 10, 10), np.uint8), np.zeros(10), np.zeros(10))
    with pytest.raises(ValueError, match="one row per A-scan"):
        draw_layers(np.zeros((10, 10), np.uint8), np.zeros(9), np.zeros(10))
