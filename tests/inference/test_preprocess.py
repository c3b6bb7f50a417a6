"""Pre-processing golden cases with answers known by construction."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from appliance.inference.preprocess import (
    COLOUR_REFERENCE,
    disc_crop,
    field_crop,
    find_field,
    frame_crop,
    locate_disc,
    normalise_colour,
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


def test_frame_crop_keeps_a_shifted_field_shifted() -> None:
    """Centred, the frame crop is the field crop; shifted, the field crop re-centres the field
    (the shift is gone) while the frame crop keeps it where the frame has it."""
    centred = _disc_image(400, 600, 300, 200, 150, (200, 90, 40))
    shifted = _disc_image(400, 600, 360, 200, 150, (200, 90, 40))  # 0.4 radii to the right
    assert (
        np.abs(frame_crop(centred, 64).astype(int) - field_crop(centred, 64).astype(int)).mean() < 2
    )
    lit = frame_crop(shifted, 64).max(axis=2) > 20
    assert lit[:, 48:].sum() > lit[:, :16].sum() + 100  # more field on the right than the left
    re_centred = field_crop(shifted, 64).astype(int)
    assert np.abs(re_centred - field_crop(centred, 64).astype(int)).mean() < 2  # shift gone
    spec = {"crop": "frame", "size": 64, "mean": [0.5, 0.3, 0.15], "std": [0.25, 0.18, 0.12]}
    assert prepare(shifted, spec).shape == (1, 3, 64, 64)


def test_prepare_follows_the_card() -> None:
    img = fundus(seed=5, size=(600, 800))
    spec = {"crop": "field", "size": 96, "mean": [0.5, 0.3, 0.15], "std": [0.25, 0.18, 0.12]}
    assert prepare(img, spec).shape == (1, 3, 96, 96)
    with pytest.raises(ValueError, match="unknown crop"):
        prepare(img, {**spec, "crop": "macula"})


def _cast(img: np.ndarray, gains: tuple[float, float, float]) -> np.ndarray:
    return np.clip(img.astype(np.float32) * np.asarray(gains, np.float32), 0, 255).astype(np.uint8)


def test_field_median_makes_one_retina_alike_under_any_camera_colour() -> None:
    """A red, a brown and a yellow camera's photograph of one retina come out alike."""
    crop = field_crop(fundus(seed=5, size=(600, 800)), 192)
    reference = normalise_colour(crop, "field-median").astype(np.float32)
    lit = crop.max(axis=2) > 40
    for gains in ((1.15, 0.8, 0.6), (0.85, 1.1, 1.3), (0.7, 0.7, 0.7)):
        seen = normalise_colour(_cast(crop, gains), "field-median").astype(np.float32)
        before = np.abs(_cast(crop, gains).astype(np.float32) - crop)[lit].mean()
        after = np.abs(seen - reference)[lit].mean()
        assert after < 3.0 < before, (gains, before, after)
        medians = np.median(seen[lit], axis=0)
        assert medians == pytest.approx(COLOUR_REFERENCE, rel=0.08)


def test_field_chroma_keeps_exposure_and_drops_the_cast() -> None:
    crop = field_crop(fundus(seed=6, size=(600, 800)), 192)
    lit = crop.max(axis=2) > 40
    normal = normalise_colour(crop, "field-chroma").astype(np.float32)
    dark = normalise_colour(_cast(crop, (0.55, 0.6, 0.5)), "field-chroma").astype(np.float32)
    assert dark[lit].mean() / normal[lit].mean() == pytest.approx(0.55, abs=0.05)
    ratio = np.median(dark[lit], axis=0) / np.median(dark[lit], axis=0).mean()
    reference = np.asarray(COLOUR_REFERENCE) / np.mean(COLOUR_REFERENCE)
    assert ratio == pytest.approx(reference, rel=0.08)


def test_colour_normalisation_edges() -> None:
    crop = field_crop(fundus(seed=7, size=(600, 800)), 96)
    assert normalise_colour(crop, "none") is crop
    black = np.zeros((96, 96, 3), np.uint8)
    assert normalise_colour(black, "field-median") is black  # no lit retina: unchanged
    no_blue = crop.copy()
    no_blue[..., 2] = np.minimum(no_blue[..., 2], 1)
    out = normalise_colour(no_blue, "field-median")
    assert int(out[..., 2].max()) <= 3 * 1 + 1  # the gain is capped at 3: noise not blown up
    with pytest.raises(ValueError, match="unknown colour normalisation"):
        normalise_colour(crop, "imagenet")


def test_prepare_applies_the_cards_colour_normalisation() -> None:
    img = fundus(seed=8, size=(600, 800))
    spec = {"crop": "field", "size": 96, "mean": [0.5, 0.3, 0.15], "std": [0.25, 0.18, 0.12]}
    plain, red = prepare(img, spec), prepare(_cast(img, (1.2, 0.8, 0.7)), spec)
    spec = {**spec, "colour": "field-median"}
    same, cast = prepare(img, spec), prepare(_cast(img, (1.2, 0.8, 0.7)), spec)
    assert np.abs(same - cast).mean() < 0.25 * np.abs(plain - red).mean()
