"""Pre-processing golden cases with answers known by construction."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from appliance.inference.preprocess import (
    disc_crop,
    field_crop,
    find_field,
    locate_disc,
    prepare,
    square_crop,
    to_tensor,
)
from tests.conftest import fundus


def _disc_image(
    h: int, w: int, cx: int, cy: int, r: int, colour: tuple[int, int, int]
) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    cv2.circle(img, (cx, cy), r, colour, -1)
    return img


@pytest.mark.parametrize(
    ("h", "w", "cx", "cy", "r"), [(600, 800, 400, 300, 280), (1224, 1632, 700, 640, 560)]
)
def test_find_field_recovers_a_drawn_circle(h: int, w: int, cx: int, cy: int, r: int) -> None:
    field = find_field(_disc_image(h, w, cx, cy, r, (180, 90, 40)))
    assert field.cx == pytest.approx(cx, abs=0.01 * r)
    assert field.cy == pytest.approx(cy, abs=0.01 * r)
    assert field.radius == pytest.approx(r, rel=0.02)


def test_field_crop_maps_the_field_onto_the_square() -> None:
    img = _disc_image(600, 800, 400, 300, 280, (200, 100, 50))
    crop = field_crop(img, 64)
    assert crop.shape == (64, 64, 3)
    assert tuple(crop[32, 32]) == (200, 100, 50)  # centre of the field
    assert tuple(crop[0, 0]) == (0, 0, 0)  # corner outside the circle
    assert tuple(crop[32, 2]) == (200, 100, 50)  # left edge of the field is near the crop edge


def test_square_crop_pads_outside_the_image_with_black() -> None:
    img = np.full((10, 10, 3), 255, np.uint8)
    crop = square_crop(img, 0, 0, 10, 20)  # centred on the top-left corner
    assert crop[:9, :9].max() == 0 and crop[11:, 11:].min() == 255


def test_to_tensor_normalises_exactly() -> None:
    crop = np.full((4, 4, 3), (255, 51, 0), np.uint8)
    tensor = to_tensor(crop, [0.5, 0.3, 0.15], [0.25, 0.18, 0.12])
    assert tensor.shape == (1, 3, 4, 4) and tensor.dtype == np.float32
    expected = [(1.0 - 0.5) / 0.25, (0.2 - 0.3) / 0.18, (0.0 - 0.15) / 0.12]
    assert np.allclose(tensor[0, :, 0, 0], expected, atol=1e-6)


@pytest.mark.parametrize("eye", ["L", "R"])
def test_disc_is_found_on_the_nasal_side(eye: str) -> None:
    img = fundus(seed=4, size=(600, 800), eye=eye)
    field = find_field(img)
    x, _ = locate_disc(img, field)
    assert bool(x > field.cx) == (eye == "R")  # right eye: disc right of centre, as photographed
    crop = disc_crop(img, 96, 0.3, field)
    luma = crop.mean(axis=2)
    assert luma[40:56, 40:56].mean() > luma.mean()  # the bright disc sits in the middle


def test_prepare_follows_the_card() -> None:
    img = fundus(seed=5, size=(600, 800))
    spec = {"crop": "field", "size": 96, "mean": [0.5, 0.3, 0.15], "std": [0.25, 0.18, 0.12]}
    assert prepare(img, spec).shape == (1, 3, 96, 96)
    with pytest.raises(ValueError, match="unknown crop"):
        prepare(img, {**spec, "crop": "macula"})
