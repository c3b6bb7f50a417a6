"""Cases: the training mix, the labels, and that every label matches what was drawn."""

from __future__ import annotations

import functools
import math
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest

from appliance.synth.case import (
    PIGMENTATIONS,
    Case,
    Rendering,
    draw_case,
    render_case,
    render_layers,
)
from appliance.synth.lesions import LESION_KINDS
from appliance.synth.retinopathy import (
    QUADRANTS,
    SEVERE_PER_QUADRANT,
    has_dme,
    icdr_grade,
)

SIZE = (512, 512)
BASE = Case(
    seed=101,
    size=SIZE,
    eye="R",
    field="macula",
    dr_grade=0,
    dme=False,
    cdr=0.3,
    notch=False,
    ppa=False,
    pigmentation="medium",
    camera="desktop45",
    defect=None,
    defect_strength=0.0,
    age_band="40-59",
    sex="F",
)
PROLIFERATIVE = {"nvd", "nve", "preretinal_haemorrhage", "vitreous_haemorrhage"}
SEVERE_ONLY = {"irma"}


@functools.cache
def _layers(case: Case) -> Rendering:
    return render_layers(case)


def _cases_of_grade(grade: int, n: int, dme: bool = False) -> list[Case]:
    rng = np.random.default_rng(1000 + grade + 10 * dme)
    return [
        replace(draw_case(rng, SIZE), dr_grade=grade, dme=dme, defect=None, defect_strength=0.0)
        for _ in range(n)
    ]


def _kinds_shown(r: Rendering) -> set[str]:
    return {kind for kind in LESION_KINDS if r.lesion_mask(kind).any()}


def test_the_training_mix_has_the_documented_prevalence() -> None:
    rng = np.random.default_rng(5)
    cases = [draw_case(rng) for _ in range(4000)]
    n = len(cases)
    grades = Counter(c.dr_grade for c in cases)
    for grade, share in zip(range(5), (0.40, 0.15, 0.20, 0.12, 0.13), strict=True):
        assert grades[grade] / n == pytest.approx(share, abs=0.03), grade
    assert sum(c.dme for c in cases) / n == pytest.approx(0.15, abs=0.025)
    assert all(c.dr_grade >= 2 for c in cases if c.dme)
    assert sum(c.glaucoma_suspect for c in cases) / n == pytest.approx(0.25, abs=0.025)
    cdrs = np.array([c.cdr for c in cases])
    assert cdrs.min() >= 0.1 and cdrs.max() <= 0.9
    assert sum(c.defect is not None for c in cases) / n == pytest.approx(0.25, abs=0.025)
    assert sum(c.eye == "L" for c in cases) / n == pytest.approx(0.5, abs=0.03)
    assert sum(c.field == "macula" for c in cases) / n == pytest.approx(0.8, abs=0.03)
    assert {c.pigmentation for c in cases} == set(PIGMENTATIONS)
    assert {c.quality for c in cases} == {"good", "usable", "reject"}
    assert all(c.size == (c.size[0], c.size[1]) and min(c.size) >= 560 for c in cases)


def test_derived_labels() -> None:
    assert not BASE.referable_dr and not BASE.glaucoma_suspect
    assert replace(BASE, dr_grade=2).referable_dr
    assert not replace(BASE, dr_grade=1).referable_dr
    assert replace(BASE, dr_grade=2, dme=True).referable_dr
    assert replace(BASE, cdr=0.6).glaucoma_suspect
    assert not replace(BASE, cdr=0.599).glaucoma_suspect
    assert replace(BASE, notch=True).glaucoma_suspect
    assert BASE.quality == "good" and BASE.gradable
    assert replace(BASE, defect="out_of_focus", defect_strength=0.9).quality == "reject"
    assert not replace(BASE, defect="out_of_focus", defect_strength=0.9).gradable


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"eye": "X"}, "eye must be"),
        ({"dr_grade": 5}, "dr_grade must be"),
        ({"dme": True, "dr_grade": 1}, "dme needs dr_grade >= 2"),
        ({"cdr": 0.95}, "cdr must be"),
        ({"pigmentation": "blue"}, "unknown pigmentation"),
        ({"camera": "phone"}, "unknown camera"),
        ({"defect": "smudge", "defect_strength": 0.5}, "unknown defect"),
        ({"size": (32, 32)}, "size too small"),
    ],
)
def test_bad_cases_are_rejected(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        replace(BASE, **changes)  # type: ignore[arg-type]


def test_rendering_is_deterministic_and_of_the_requested_size() -> None:
    case = replace(BASE, dr_grade=3, size=(300, 400), camera="handheld45")
    first = render_case(case)
    assert first.shape == (300, 400, 3) and first.dtype == np.uint8
    assert np.array_equal(first, render_case(case))
    assert not np.array_equal(first, render_case(replace(case, seed=case.seed + 1)))


def test_grade_0_has_no_lesion_pixels_and_grade_1_only_microaneurysms() -> None:
    for case in _cases_of_grade(0, 3):
        r = _layers(case)
        assert not r.lesion_mask().any() and r.lesions == ()
    for case in _cases_of_grade(1, 3):
        r = _layers(case)
        assert _kinds_shown(r) == {"microaneurysm"}
        assert {x.kind for x in r.lesions} == {"microaneurysm"}


@pytest.mark.parametrize("grade", [2, 3, 4])
def test_drawn_lesions_imply_the_grade(grade: int) -> None:
    for case in _cases_of_grade(grade, 4):
        r = _layers(case)
        assert icdr_grade(r.lesions) == grade
        shown = _kinds_shown(r)
        kinds = {x.kind for x in r.lesions}
        assert shown <= kinds  # nothing drawn that is not recorded
        if grade == 2:
            assert not shown & (PROLIFERATIVE | SEVERE_ONLY)
            assert kinds & {"haemorrhage", "flame_haemorrhage", "hard_exudate", "cotton_wool_spot"}
        if grade == 3:
            assert not shown & PROLIFERATIVE
            haem = Counter(
                x.quadrant for x in r.lesions if x.kind in ("haemorrhage", "flame_haemorrhage")
            )
            beaded = {x.quadrant for x in r.lesions if x.kind == "venous_beading"}
            assert (
                all(haem[q] >= SEVERE_PER_QUADRANT for q in QUADRANTS)
                or len(beaded) >= 2
                or "irma" in shown
            )
        if grade == 4:
            assert shown & PROLIFERATIVE


@pytest.mark.parametrize("grade", [1, 2, 3, 4])
def test_every_recorded_lesion_is_visible_where_recorded(grade: int) -> None:
    for case in _cases_of_grade(grade, 2):
        r = _layers(case)
        behind_blood = r.lesion_mask("preretinal_haemorrhage")
        for lesion in r.lesions:
            if lesion.kind in ("venous_beading", "vitreous_haemorrhage", "irma", "nve", "nvd"):
                continue  # spread out: checked by kind above
            mask = r.lesion_mask(lesion.kind)
            reach = int(lesion.size) + 3
            x, y = int(round(lesion.x)), int(round(lesion.y))
            if lesion.kind != "preretinal_haemorrhage" and behind_blood[y, x]:
                assert not mask[y, x]  # hidden, and the mask says so
                continue
            window = mask[max(0, y - reach) : y + reach + 1, max(0, x - reach) : x + reach + 1]
            assert window.any(), lesion


def test_dme_exudates_lie_within_one_disc_diameter_of_the_fovea() -> None:
    for dme in (True, False):
        for case in _cases_of_grade(3, 4, dme=dme):
            r = _layers(case)
            lay = r.layout
            dd = lay.disc_diameter
            assert has_dme(r.lesions, lay) is dme
            ys, xs = np.nonzero(r.lesion_mask("hard_exudate"))
            near = np.hypot(xs - lay.fovea_cx, ys - lay.fovea_cy) <= dd
            assert bool(near.any()) is dme
            exudates = [x for x in r.lesions if x.kind == "hard_exudate"]
            dist = [math.hypot(x.x - lay.fovea_cx, x.y - lay.fovea_cy) / dd for x in exudates]
            if dme:
                assert min(dist) <= 1.0
            else:
                assert all(d >= 1.3 for d in dist)


def test_left_and_right_eyes_mirror_with_the_disc_nasal() -> None:
    right = _layers(replace(BASE, dr_grade=3, camera="desktop50"))
    left = _layers(replace(BASE, dr_grade=3, camera="desktop50", eye="L"))
    assert right.layout.disc_cx > right.layout.field_cx > right.layout.fovea_cx
    assert left.layout.disc_cx < left.layout.field_cx < left.layout.fovea_cx
    assert np.array_equal(left.disc_mask, right.disc_mask[:, ::-1])
    assert np.array_equal(left.cup_mask, right.cup_mask[:, ::-1])
    assert np.array_equal(left.lesion_bits, right.lesion_bits[:, ::-1])
    assert [x.quadrant for x in left.lesions] == [x.quadrant for x in right.lesions]
    mirrored = np.abs(left.image[:, ::-1].astype(int) - right.image.astype(int)).mean()
    other = _layers(replace(BASE, dr_grade=3, camera="desktop50", seed=BASE.seed + 1))
    unrelated = np.abs(other.image.astype(int) - right.image.astype(int)).mean()
    assert mirrored < 0.25 * unrelated


def test_cup_area_grows_with_the_cup_to_disc_ratio() -> None:
    cdrs = [0.1, 0.3, 0.5, 0.7, 0.9]
    renders = [_layers(replace(BASE, cdr=c, size=(768, 768))) for c in cdrs]
    areas = [int(r.cup_mask.sum()) for r in renders]
    assert all(np.diff(areas) > 0), areas
    assert all(np.array_equal(r.disc_mask, renders[0].disc_mask) for r in renders)
    # The cup is the pale part of the disc: count pale disc pixels in the pictures themselves.
    disc = renders[0].disc_mask
    green = [r.image[..., 1][disc].astype(float) for r in renders]
    level = 0.5 * (np.median(green[0]) + np.median(green[-1]))
    pale = [int((g > level).sum()) for g in green]
    assert all(np.diff(pale) > 0), pale
    ratio = math.sqrt(pale[2] / disc.sum())
    assert 0.3 < ratio < 0.7  # about the cdr of 0.5


def test_pigmentation_kinds_differ_as_named() -> None:
    def luma(p: str) -> float:
        img = render_case(replace(BASE, pigmentation=p)).astype(float)
        return float((img @ np.array([0.299, 0.587, 0.114])).mean())

    assert luma("light") > luma("medium") > luma("dark")
