"""The synthetic OCT generator: determinism, label consistency, defects, dataset files."""

from __future__ import annotations

import csv
import dataclasses

import numpy as np
import pytest

from appliance.synth.oct import (
    CI_DME_CST_UM,
    GEOMETRIES,
    OctCase,
    draw_oct_case,
    healthy_case,
    oct_quality_of,
    render_oct,
)
from appliance.synth.oct.anatomy import thickness_um
from appliance.synth.oct.case import anatomy_of
from appliance.synth.oct.dataset import write_oct_dataset

SMALL = GEOMETRIES["small"]


def _case(**changes: object) -> OctCase:
    base = healthy_case(7, SMALL)
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_render_is_a_pure_function_of_the_case() -> None:
    case = draw_oct_case(np.random.default_rng(5), SMALL)
    a, b = render_oct(case), render_oct(case)
    assert a.volume.dtype == np.uint8 and a.volume.shape == SMALL.shape
    assert np.array_equal(a.volume, b.volume)
    assert np.array_equal(a.ilm_px, b.ilm_px, equal_nan=True)
    other = render_oct(dataclasses.replace(case, seed=case.seed + 1))
    assert not np.array_equal(a.volume, other.volume)


def test_normal_eye_has_a_foveal_pit_and_normal_thickness() -> None:
    case = _case()
    r = render_oct(case)
    assert 240.0 <= case.cst_um <= 295.0
    assert not case.ci_dme and not case.centre_fluid and case.gradable
    # the thinnest point of the map lies at the fovea, the parafoveal ring is thicker
    f, a = np.unravel_index(int(np.argmin(r.thickness_um)), r.thickness_um.shape)
    assert abs(f - r.fovea_index[0]) <= 1.5 and abs(a - r.fovea_index[1]) <= 6
    assert 300.0 <= float(r.thickness_um.max()) <= 380.0
    assert np.all(r.ilm_px < r.rpe_px) and np.all(r.rpe_px <= r.bm_px)


def test_cst_label_is_the_mean_thickness_of_the_central_disc() -> None:
    case = _case(thickening_um=120.0)
    anat = anatomy_of(case)
    fx, fy = anat.fovea
    r = np.sqrt(np.random.default_rng(0).uniform(0, 0.25, 20000))
    t = np.random.default_rng(1).uniform(0, 2 * np.pi, 20000)
    monte_carlo = float(np.mean(thickness_um(anat, fx + r * np.cos(t), fy + r * np.sin(t))))
    assert case.cst_um == pytest.approx(monte_carlo, abs=1.5)
    assert case.ci_dme == (case.cst_um >= CI_DME_CST_UM)


def test_central_fluid_makes_ci_dme_and_shows_in_the_mask() -> None:
    case = _case(cysts=3, srf_um=120.0, fluid_in_centre=True)
    r = render_oct(case)
    assert case.centre_fluid and case.ci_dme
    assert r.fluid_mask.sum() > 50
    fluid_values = r.volume[r.fluid_mask].astype(float).mean()
    retina = (np.arange(SMALL.rows)[None, :, None] > r.ilm_px[:, None, :] + 3) & ~r.fluid_mask
    assert fluid_values < 0.6 * r.volume[retina].astype(float).mean()
    outside = _case(cysts=3, fluid_in_centre=False)
    assert not outside.centre_fluid


def test_drusen_lift_the_rpe_above_bruchs_membrane_without_changing_thickness() -> None:
    drusen = render_oct(_case(drusen=5))
    axial_um = SMALL.spacing_mm[1] * 1000
    lift = drusen.bm_px - drusen.rpe_px
    assert float(lift.max()) * axial_um > 15.0
    ilm_rpe = (drusen.rpe_px - drusen.ilm_px) * axial_um
    assert np.allclose(drusen.thickness_um, ilm_rpe, atol=1e-6)


@pytest.mark.parametrize(
    ("defect", "strength", "quality"),
    [
        ("blink", 0.02, "good"),
        ("blink", 0.1, "usable"),
        ("blink", 0.3, "reject"),
        ("motion", 0.5, "reject"),
        ("decentred", 0.3, "usable"),
        ("low_signal", 0.1, "good"),
    ],
)
def test_quality_label_follows_the_defect_levels(
    defect: str, strength: float, quality: str
) -> None:
    assert oct_quality_of(defect, strength) == quality
    assert _case(defect=defect, defect_strength=strength).gradable == (quality != "reject")


def test_defects_change_the_volume_as_stated() -> None:
    blink = render_oct(_case(defect="blink", defect_strength=0.4))
    assert len(blink.blank_frames) == round(0.4 * 0.4 * SMALL.frames)
    assert np.isnan(blink.ilm_px[list(blink.blank_frames)]).all()
    clipped = render_oct(_case(defect="clipped", defect_strength=0.4))
    assert float(np.mean(clipped.ilm_px < -0.5)) == pytest.approx(0.2, abs=0.01)
    decentred = _case(defect="decentred", defect_strength=0.5)
    assert float(np.hypot(*decentred.fovea_mm)) == pytest.approx(0.75, abs=0.15)


def test_bad_fields_are_refused() -> None:
    with pytest.raises(ValueError, match="eye"):
        _case(eye="X")
    with pytest.raises(ValueError, match="unknown defect"):
        _case(defect="smudge")


def test_dataset_writes_volumes_truth_and_labels(tmp_path) -> None:  # type: ignore[no-untyped-def]
    write_oct_dataset(tmp_path, n=3, seed=4, geometry="small")
    rows = list(csv.DictReader((tmp_path / "labels.csv").open()))
    assert len(rows) == 3
    for row in rows:
        volume = np.load(tmp_path / row["volume"])
        assert volume.shape == SMALL.shape and volume.dtype == np.uint8
        truth = np.load(tmp_path / row["truth"])
        assert truth["ilm_px"].shape == (SMALL.frames, SMALL.ascans)
        assert row["ci_dme"] in ("0", "1") and row["gradable"] in ("0", "1")
    again = tmp_path / "again"
    write_oct_dataset(again, n=3, seed=4, geometry="small")
    assert (again / "labels.csv").read_text() == (tmp_path / "labels.csv").read_text()
