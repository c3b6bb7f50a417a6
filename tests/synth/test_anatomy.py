"""The disc model (cup-to-disc ratio, ISNT, notch), the ICDR rules and the camera profiles."""

from __future__ import annotations

import math

import numpy as np
import pytest

from appliance.synth.camera import CAMERAS
from appliance.synth.disc import DiscModel, disc_model
from appliance.synth.layout import FundusLayout, field_layout, mirrored
from appliance.synth.retinopathy import (
    QUADRANTS,
    SEVERE_PER_QUADRANT,
    Lesion,
    icdr_grade,
    plan_findings,
)

INFERIOR, SUPERIOR, NASAL, TEMPORAL = 0.5 * math.pi, 1.5 * math.pi, 0.0, math.pi


def _layout(seed: int, field: str = "macula") -> FundusLayout:
    return field_layout(
        np.random.default_rng(seed),
        (600, 800),
        field=field,
        field_deg=45.0,
        field_fill=0.94,
        pigmentation=0.5,
        cup_ratio=0.3,
    )


def _vertical_cdr(model: DiscModel) -> float:
    theta = np.linspace(0.0, 2.0 * np.pi, 7200, endpoint=False)
    ys = model.cup_radius(theta) * np.sin(theta)
    return float((ys.max() - ys.min()) / (2.0 * model.ry))


@pytest.mark.parametrize("seed", range(20))
def test_healthy_rim_follows_isnt_and_cdr_is_exact(seed: int) -> None:
    for cdr in (0.1, 0.3, 0.5, 0.65):
        model = disc_model(_layout(seed), np.random.default_rng(seed), cdr, False, False)
        i, s, n, t = model.rim_width(np.array([INFERIOR, SUPERIOR, NASAL, TEMPORAL]))
        assert i > s > n > t > 0
        assert _vertical_cdr(model) == pytest.approx(cdr, abs=1e-3)
        assert model.ry > model.rx  # discs are a little taller than wide


def test_cup_grows_with_cdr_and_a_notch_thins_the_inferotemporal_rim() -> None:
    lay = _layout(3)
    areas = [
        disc_model(lay, np.random.default_rng(3), c, False, False).cup_area()
        for c in (0.1, 0.3, 0.5, 0.7, 0.9)
    ]
    assert all(np.diff(areas) > 0)
    plain = disc_model(lay, np.random.default_rng(3), 0.5, False, False)
    notched = disc_model(lay, np.random.default_rng(3), 0.5, True, False)
    assert notched.notch_angle is not None
    assert INFERIOR < notched.notch_angle < TEMPORAL  # inferotemporal
    at = np.array([notched.notch_angle])
    assert notched.rim_width(at)[0] < 0.5 * plain.rim_width(at)[0]
    away = np.array([NASAL, SUPERIOR])
    assert np.allclose(notched.rim_width(away), plain.rim_width(away), rtol=1e-3)
    with pytest.raises(ValueError, match="cdr must be in"):
        disc_model(lay, np.random.default_rng(3), 1.0, False, False)


@pytest.mark.parametrize("field", ["macula", "disc"])
def test_layout_puts_the_disc_nasal_and_mirrors(field: str) -> None:
    lay = _layout(1, field)
    dd = lay.disc_diameter
    assert lay.eye == "R" and lay.disc_cx > lay.fovea_cx
    assert 2.2 * dd < math.hypot(lay.disc_cx - lay.fovea_cx, lay.disc_cy - lay.fovea_cy) < 2.8 * dd
    centre = (lay.fovea_cx, lay.fovea_cy) if field == "macula" else (lay.disc_cx, lay.disc_cy)
    assert math.hypot(centre[0] - lay.field_cx, centre[1] - lay.field_cy) < 0.1 * lay.field_radius
    left = mirrored(lay)
    assert left.eye == "L" and left.disc_cx < left.fovea_cx
    assert left.disc_cx == pytest.approx(lay.width - 1 - lay.disc_cx)
    back = mirrored(left)
    assert back.eye == "R"
    for name in ("field_cx", "disc_cx", "fovea_cx", "disc_cy"):
        assert getattr(back, name) == pytest.approx(getattr(lay, name), abs=1e-9)


def test_disc_size_follows_the_field_angle() -> None:
    def disc_over_field(deg: float) -> float:
        lay = field_layout(
            np.random.default_rng(0),
            (600, 800),
            field="macula",
            field_deg=deg,
            field_fill=0.94,
            pigmentation=0.5,
            cup_ratio=0.3,
        )
        return lay.disc_radius / lay.field_radius

    assert disc_over_field(50.0) == pytest.approx(disc_over_field(45.0) * 45.0 / 50.0)


def _lesion(kind: str, quadrant: str = "superotemporal") -> Lesion:
    return Lesion(kind, 0.0, 0.0, 1.0, quadrant)


@pytest.mark.parametrize(
    ("kinds", "grade"),
    [
        ([], 0),
        (["microaneurysm"] * 5, 1),
        (["microaneurysm", "haemorrhage"], 2),
        (["hard_exudate"], 2),
        (["cotton_wool_spot"], 2),
        (["irma"], 3),
        (["microaneurysm", "nvd"], 4),
        (["preretinal_haemorrhage"], 4),
        (["vitreous_haemorrhage"], 4),
    ],
)
def test_icdr_rules(kinds: list[str], grade: int) -> None:
    assert icdr_grade(_lesion(k) for k in kinds) == grade


def test_four_two_one_rule_counts_quadrants() -> None:
    many = [_lesion("haemorrhage", q) for q in QUADRANTS for _ in range(SEVERE_PER_QUADRANT)]
    assert icdr_grade(many) == 3
    assert icdr_grade(many[:-1]) == 2  # one quadrant one short
    beading = [_lesion("venous_beading", q) for q in QUADRANTS[:2]]
    assert icdr_grade(beading) == 3
    assert icdr_grade(beading[:1]) == 2


@pytest.mark.parametrize("grade", range(5))
def test_plans_never_straddle_grades(grade: int) -> None:
    for seed in range(200):
        f = plan_findings(grade, grade >= 2 and seed % 2 == 0, np.random.default_rng(seed))
        severe = min(f.haemorrhages) >= SEVERE_PER_QUADRANT or f.beading_quadrants >= 2
        severe = severe or f.irma_sites > 0
        proliferative = f.nvd or f.nve_sites > 0 or f.preretinal or f.vitreous
        assert proliferative is (grade == 4)
        if grade <= 2:
            assert not severe and max(f.haemorrhages) <= 4
        if grade == 3:
            assert severe
        assert (f.microaneurysms > 0) is (grade >= 1)
    with pytest.raises(ValueError, match="need dr_grade >= 2"):
        plan_findings(1, True, np.random.default_rng(0))


def test_camera_profiles() -> None:
    """The camera families seen in practice are all there."""
    profiles = list(CAMERAS.values())
    assert {p.field_deg for p in profiles} == {45.0, 50.0, 60.0}
    assert any(p.notch_deg is not None for p in profiles)
    assert any(p.notch_deg is None for p in profiles)
    whole = [p for p in profiles if p.field_fill < 1.0]
    cut = [p for p in profiles if 1.0 < p.field_fill < 1.2 and p.size[1] / p.size[0] >= 1.4]
    crops = [p for p in profiles if p.field_fill >= 1.2]
    legacy = [p for p in profiles if p.megapixels < 0.5]
    assert len(whole) >= 4 and cut and crops and legacy
    for profile in profiles:
        assert 0.3 <= profile.megapixels <= 9.0, profile.name
        assert 0.85 <= profile.field_fill <= 1.4, profile.name
        assert 70 <= profile.jpeg_quality <= 100
