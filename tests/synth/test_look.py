"""Camera families and per-photograph looks: what each adds is where it should be, and nothing
about a photograph's labels changes with its look."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from appliance.synth.camera import CAMERAS
from appliance.synth.case import draw_case, render_case, render_layers
from appliance.synth.look import LOOK_MIX, NEUTRAL, Look, draw_look
from tests.synth.test_case import BASE as CASE_BASE

BASE = replace(CASE_BASE, seed=202, size=(480, 640))


def _lit(img: np.ndarray) -> np.ndarray:
    return np.asarray(img.max(axis=2) > 40)


def test_drawn_looks_follow_the_documented_mix() -> None:
    rng = np.random.default_rng(3)
    looks = [draw_look(rng) for _ in range(600)]
    shares = {
        "small_pupil": np.mean([x.pupil > 0 for x in looks]),
        "lashes": np.mean([x.lashes > 0 for x in looks]),
        "flash": np.mean([x.flashes > 0 for x in looks]),
        "sheen": np.mean([x.sheen > 0 for x in looks]),
        "grey_surround": np.mean([x.surround_noise > 0 for x in looks]),
    }
    for name, share in shares.items():
        assert share == pytest.approx(LOOK_MIX[name], abs=0.05), name
    blues = [x.cast[2] for x in looks]
    assert min(blues) < 0.7 and max(blues) > 1.25  # from red/brown to yellow-green balance
    with pytest.raises(ValueError, match="gamma"):
        Look(gamma=2.0)


def test_the_neutral_look_renders_as_a_case_without_one() -> None:
    assert BASE.look == NEUTRAL
    assert np.array_equal(render_case(BASE), render_case(replace(BASE, look=Look())))


def test_a_cast_moves_the_colour_balance_by_its_gains() -> None:
    plain = render_case(BASE).astype(np.float32)
    bluer = render_case(replace(BASE, look=Look(cast=(1.0, 1.0, 1.3)))).astype(np.float32)
    lit = _lit(plain) & (plain.max(axis=2) < 230)
    ratio = np.median(bluer[lit][:, 2]) / np.median(plain[lit][:, 2])
    assert ratio == pytest.approx(1.3, abs=0.08)
    assert np.median(bluer[lit][:, 1]) == pytest.approx(np.median(plain[lit][:, 1]), abs=2)


def test_lashes_shade_the_top_of_the_field_only() -> None:
    plain = render_case(BASE).astype(np.float32)
    lashed = render_case(replace(BASE, look=Look(lashes=0.5, lashes_side=-1))).astype(np.float32)
    lit = _lit(plain)
    shaded = (lashed.mean(axis=2) < 0.85 * plain.mean(axis=2)) & lit
    h = plain.shape[0]
    assert shaded[: h // 3].sum() > 0.02 * lit[: h // 3].sum()
    assert shaded[h // 2 :].sum() == 0


def test_flashes_sheen_and_a_grey_surround_add_light_where_expected() -> None:
    plain = render_case(BASE).astype(np.float32)
    flashed = render_case(replace(BASE, look=Look(flashes=2))).astype(np.float32)
    assert flashed.max(axis=2).sum() > plain.max(axis=2).sum()
    sheen = render_case(replace(BASE, look=Look(sheen=1.0))).astype(np.float32)
    assert sheen[..., 2][_lit(plain)].mean() > plain[..., 2][_lit(plain)].mean() + 1.0
    grey = render_case(replace(BASE, look=Look(black_level=12.0, surround_noise=3.0)))
    corner = grey[:20, :20].astype(np.float32)
    assert corner.mean() == pytest.approx(12.0, abs=3.0) and corner.std() > 1.0
    assert plain[:20, :20].mean() < 5.0


def test_the_small_pupil_vignette_darkens_the_edge_not_the_centre() -> None:
    plain = render_case(BASE).astype(np.float32)
    small = render_case(replace(BASE, look=Look(pupil=0.3))).astype(np.float32)
    h, w = plain.shape[:2]
    centre = (slice(h // 2 - 30, h // 2 + 30), slice(w // 2 - 30, w // 2 + 30))
    edge = (slice(h // 2 - 20, h // 2 + 20), slice(int(0.15 * w), int(0.2 * w)))
    assert small[centre].mean() == pytest.approx(plain[centre].mean(), abs=1.0)
    assert small[edge].mean() < 0.93 * plain[edge].mean()


def test_camera_shapes_cut_the_field_as_real_exports_do() -> None:
    cut = render_case(replace(BASE, camera="sensor_cut45", size=(400, 600)))
    lit = _lit(cut)
    assert lit[0, 280:320].all() and lit[-1, 280:320].all()  # circle cut at top and bottom
    assert not lit[:, :5].any() and not lit[:, -5:].any()  # but round at left and right
    crop = render_case(replace(BASE, camera="export_crop", size=(480, 600)))
    lit = _lit(crop)
    h, w = lit.shape
    assert lit[0, w // 2] and lit[-1, w // 2] and lit[h // 2, 0] and lit[h // 2, -1]


def test_max_side_keeps_each_cameras_frame_shape() -> None:
    rng = np.random.default_rng(9)
    cases = [draw_case(rng, None, 800) for _ in range(60)]
    for case in cases:
        native = CAMERAS[case.camera].size
        if max(native) <= 400:
            assert case.size == native
            continue
        assert 400 - 1 <= max(case.size) <= min(800, max(native))
        assert case.size[1] / case.size[0] == pytest.approx(native[1] / native[0], abs=0.01)
    assert {c.camera for c in cases} == set(CAMERAS)


@pytest.mark.parametrize("camera", ["export_crop", "sensor_cut45"])
def test_every_recorded_lesion_lies_inside_a_cut_frame(camera: str) -> None:
    rng = np.random.default_rng(21)
    seen = 0
    while seen < 3:
        case = draw_case(rng, None, 640)
        if case.dr_grade < 2 or case.defect is not None:
            continue
        case = replace(
            case, camera=camera, size=(480, 600) if camera == "export_crop" else case.size
        )
        r = render_layers(case)
        h, w = r.image.shape[:2]
        for lesion in r.lesions:
            if lesion.kind in ("vitreous_haemorrhage", "venous_beading", "irma", "nve", "nvd"):
                continue
            assert 0 <= lesion.x < w and 0 <= lesion.y < h, lesion
        seen += 1
