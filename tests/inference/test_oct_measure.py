"""The classical OCT baseline against the generator's truth on a few small volumes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from appliance.inference.oct.measure import measure_oct
from appliance.synth.oct import GEOMETRIES, healthy_case, render_oct

SMALL = GEOMETRIES["small"]
BASE = healthy_case(11, SMALL)


@pytest.mark.parametrize("eye", ["R", "L"])
def test_normal_volume_boundaries_cst_and_fovea(eye: str) -> None:
    case = dataclasses.replace(BASE, eye=eye)
    r = render_oct(case)
    m = measure_oct(r.volume, r.spacing_mm, eye)
    assert float(np.mean(np.abs(m.ilm_px - r.ilm_px))) <= 1.0  # px
    assert float(np.mean(np.abs(m.rpe_px - r.rpe_px))) <= 1.0
    assert m.cst_um == pytest.approx(case.cst_um, abs=10.0)
    assert float(np.hypot(*np.subtract(m.fovea_mm, case.fovea_mm))) <= 0.15
    assert m.etdrs.ring_mean_um("inner") > m.cst_um + 30.0  # parafoveal ring is thicker
    assert 7.0 <= m.etdrs.volume_mm3 <= 10.0
    assert m.fluid.p_centre < 0.5


def test_thickened_macula_measures_thick() -> None:
    case = dataclasses.replace(BASE, thickening_um=120.0)
    r = render_oct(case)
    m = measure_oct(r.volume, r.spacing_mm, "R")
    assert case.ci_dme
    assert m.cst_um == pytest.approx(case.cst_um, abs=12.0)


def test_central_subretinal_fluid_is_found() -> None:
    case = dataclasses.replace(BASE, seed=12, srf_um=150.0, fluid_in_centre=True)
    r = render_oct(case)
    m = measure_oct(r.volume, r.spacing_mm, "R")
    assert case.centre_fluid
    assert m.fluid.p_centre >= 0.5
    overlap = (m.fluid.mask & r.fluid_mask).sum() / max(1, r.fluid_mask.sum())
    assert overlap > 0.3


def test_blank_b_scans_are_reported_not_measured() -> None:
    case = dataclasses.replace(BASE, defect="blink", defect_strength=0.3)
    r = render_oct(case)
    m = measure_oct(r.volume, r.spacing_mm, "R")
    assert set(m.blank_frames) == set(r.blank_frames)
    assert np.isnan(m.ilm_px[list(r.blank_frames)]).all()
    assert np.isfinite(m.cst_um)


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="volume"):
        measure_oct(np.zeros((10, 10)), (0.1, 0.004, 0.01), "R")
    with pytest.raises(ValueError, match="eye"):
        measure_oct(np.zeros((5, 64, 64), np.uint8), (0.1, 0.004, 0.01), "X")


def test_fovea_is_found_when_cysts_fill_the_pit() -> None:
    # B-scans 125 µm apart (compact): at 250 µm (small) this central cyst lies between B-scans
    case = dataclasses.replace(
        BASE,
        geometry=GEOMETRIES["compact"],
        seed=2024,
        cysts=6,
        fluid_in_centre=True,
        thickening_um=30.0,
    )
    r = render_oct(case)
    m = measure_oct(r.volume, r.spacing_mm, "R")
    assert case.centre_fluid and case.ci_dme
    assert float(np.hypot(*np.subtract(m.fovea_mm, case.fovea_mm))) <= 0.1
    assert m.cst_um == pytest.approx(case.cst_um, abs=15.0)
    assert m.fluid.p_centre >= 0.5
