"""The synthetic fundus generator and its on-purpose degradations."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from appliance.synth import (
    DEGRADATIONS,
    NOT_FUNDUS_KINDS,
    fundus_layout,
    make_fundus,
    not_fundus,
    off_center,
    overexpose,
    underexpose,
    uneven_illumination,
)

SIZE = (320, 400)  # (height, width): small, and wider than tall


def _luma(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def test_same_seed_gives_the_same_image() -> None:
    first = make_fundus(11, SIZE, "L", 0.3)
    second = make_fundus(11, SIZE, "L", 0.3)
    assert first.dtype == np.uint8
    assert first.shape == (*SIZE, 3)
    assert np.array_equal(first, second)
    assert not np.array_equal(first, make_fundus(12, SIZE, "L", 0.3))


@pytest.mark.parametrize("size", [(64, 64), (200, 300), (300, 200)])
def test_any_size_gives_rgb_uint8_of_that_size(size: tuple[int, int]) -> None:
    img = make_fundus(0, size)
    assert img.shape == (*size, 3)
    assert img.dtype == np.uint8


def test_black_surround_and_orange_red_field() -> None:
    img = make_fundus(3, SIZE, "R", 0.5)
    lay = fundus_layout(3, SIZE, "R", 0.5)
    for y, x in [(0, 0), (0, SIZE[1] - 1), (SIZE[0] - 1, 0), (SIZE[0] - 1, SIZE[1] - 1)]:
        assert img[y, x].max() < 12
    # A patch of background between the fovea and the field edge, away from the disc.
    cy = int(lay.field_cy + 0.45 * lay.field_radius)
    cx = int(lay.field_cx)
    red, green, blue = img[cy - 5 : cy + 5, cx - 5 : cx + 5].reshape(-1, 3).mean(axis=0)
    assert red > 1.5 * green > 1.5 * blue
    assert red > 100


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_eyes_mirror_disc_nasal_fovea_temporal(seed: int) -> None:
    for eye, disc_right in [("R", True), ("L", False)]:
        lay = fundus_layout(seed, SIZE, eye)
        img = make_fundus(seed, SIZE, eye)
        assert (lay.disc_cx > lay.field_cx) is disc_right
        assert (lay.fovea_cx < lay.disc_cx) is disc_right
        dd = 2.0 * lay.disc_radius
        assert 2.2 * dd < abs(lay.disc_cx - lay.fovea_cx) < 2.8 * dd
        # The brightest smooth spot in the picture is the disc, on the expected side.
        glow = cv2.GaussianBlur(_luma(img), (0, 0), lay.disc_radius / 2)
        y, x = np.unravel_index(int(np.argmax(glow)), glow.shape)
        assert np.hypot(x - lay.disc_cx, y - lay.disc_cy) < lay.disc_radius
        assert bool(x > SIZE[1] / 2) is disc_right


def test_more_pigment_is_darker() -> None:
    light = make_fundus(5, SIZE, "R", 0.1)
    dark = make_fundus(5, SIZE, "R", 0.9)
    assert _luma(dark).mean() < 0.85 * _luma(light).mean()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"eye": "X"}, "eye must be"),
        ({"pigmentation": 1.5}, "pigmentation must be"),
        ({"size": (8, 100)}, "size must be"),
    ],
)
def test_bad_generator_arguments_are_rejected(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_fundus(0, **kwargs)  # type: ignore[arg-type]


def test_degradations_cover_the_six_image_reasons() -> None:
    assert set(DEGRADATIONS) == {
        "out_of_focus",
        "too_dark",
        "too_bright",
        "low_contrast",
        "uneven_illumination",
        "off_center",
    }


@pytest.mark.parametrize("code", sorted(DEGRADATIONS))
def test_degradation_keeps_shape_and_rejects_bad_strength(code: str) -> None:
    img = make_fundus(2, SIZE)
    out = DEGRADATIONS[code](img, 0.7)
    assert out.shape == img.shape
    assert out.dtype == np.uint8
    assert not np.array_equal(out, img)
    assert np.array_equal(DEGRADATIONS[code](img, 0.7), out)  # deterministic
    with pytest.raises(ValueError, match="strength must be in"):
        DEGRADATIONS[code](img, 1.5)
    with pytest.raises(ValueError, match="expected an RGB uint8"):
        DEGRADATIONS[code](img.astype(np.float32), 0.5)


@pytest.mark.parametrize("code", sorted(set(DEGRADATIONS) - {"off_center"}))
def test_zero_strength_leaves_the_image_alone(code: str) -> None:
    img = make_fundus(2, SIZE)
    out = DEGRADATIONS[code](img, 0.0)
    assert np.abs(out.astype(int) - img.astype(int)).max() <= 1


def test_exposure_moves_the_right_way() -> None:
    img = make_fundus(4, SIZE)
    assert _luma(underexpose(img, 0.5)).mean() < 0.7 * _luma(img).mean()
    assert _luma(overexpose(img, 0.5)).mean() > 1.4 * _luma(img).mean()


def test_uneven_illumination_shadows_the_chosen_side() -> None:
    img = make_fundus(4, SIZE)
    for angle, side in [(0.0, "right"), (180.0, "left")]:
        out = uneven_illumination(img, 0.8, angle_deg=angle)
        ratio = _luma(out).mean(axis=0) / np.maximum(_luma(img).mean(axis=0), 1.0)
        half = SIZE[1] // 2
        left, right = ratio[half // 2 : half].mean(), ratio[half : half + half // 2].mean()
        assert bool(right < left) is (side == "right")


@pytest.mark.parametrize("angle", [0.0, 90.0, 200.0])
def test_off_center_cuts_the_field_at_the_frame_edge(angle: float) -> None:
    img = make_fundus(6, SIZE)
    out = off_center(img, 0.5, angle_deg=angle)
    edges = {0.0: out[:, -1], 90.0: out[-1, :], 200.0: out[:, 0]}
    assert edges[angle].max(axis=1).max() > 60  # bright field pixels reach that edge
    assert np.count_nonzero(_luma(out) > 30) < np.count_nonzero(_luma(img) > 30)


@pytest.mark.parametrize("kind", NOT_FUNDUS_KINDS)
def test_not_fundus_pictures(kind: str) -> None:
    img = not_fundus(3, (240, 320), kind=kind)
    assert img.shape == (240, 320, 3)
    assert img.dtype == np.uint8
    assert np.array_equal(img, not_fundus(3, (240, 320), kind=kind))


def test_not_fundus_cycles_kinds_and_rejects_unknown() -> None:
    assert np.array_equal(not_fundus(6, (64, 64)), not_fundus(6, (64, 64), kind="grey"))
    with pytest.raises(ValueError, match="kind must be one of"):
        not_fundus(0, (64, 64), kind="cat")
