"""ETDRS grid geometry on constructed thickness maps with known answers, both eyes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from appliance.inference.oct.etdrs import (
    SUBFIELDS,
    etdrs_grid,
    find_fovea,
    isotropic,
    subfield_area_mm2,
    subfield_labels,
)

STEP = 0.02  # mm
N = 301  # 6 mm


def _grid() -> tuple[np.ndarray, np.ndarray]:
    c = (np.arange(N) - (N - 1) / 2.0) * STEP
    return c[None, :], c[:, None]


def test_areas_add_up_to_the_6_mm_disc() -> None:
    assert sum(subfield_area_mm2(n) for n in SUBFIELDS) == pytest.approx(math.pi * 9.0)


@pytest.mark.parametrize("eye", ["R", "L"])
def test_nasal_and_temporal_follow_the_eye(eye: str) -> None:
    right_of_fovea = subfield_labels(np.array([1.0]), np.array([0.0]), eye)[0]
    above = subfield_labels(np.array([0.0]), np.array([-1.0]), eye)[0]
    below_outer = subfield_labels(np.array([0.0]), np.array([2.0]), eye)[0]
    assert SUBFIELDS[right_of_fovea] == ("inner_nasal" if eye == "R" else "inner_temporal")
    assert SUBFIELDS[above] == "inner_superior"
    assert SUBFIELDS[below_outer] == "outer_inferior"
    assert subfield_labels(np.array([0.1]), np.array([0.1]), eye)[0] == 0
    assert subfield_labels(np.array([3.1]), np.array([0.0]), eye)[0] == -1


@pytest.mark.parametrize("eye", ["R", "L"])
def test_each_subfield_mean_is_recovered(eye: str) -> None:
    x, y = _grid()
    centre = (0.3, -0.2)
    labels = subfield_labels(x - centre[0], y - centre[1], eye)
    values = {name: 200.0 + 10.0 * i for i, name in enumerate(SUBFIELDS)}
    thickness = np.full(labels.shape, 999.0)
    for i, name in enumerate(SUBFIELDS):
        thickness[labels == i] = values[name]
    grid = etdrs_grid(thickness, STEP, eye, centre)
    for name in SUBFIELDS:
        assert grid.thickness_um[name] == pytest.approx(values[name], abs=1e-9)
    expected = sum(values[n] * subfield_area_mm2(n) for n in SUBFIELDS) / 1000.0
    assert grid.volume_mm3 == pytest.approx(expected)
    assert grid.coverage["outer_nasal" if eye == "L" else "outer_temporal"] < 1.0  # off the scan
    assert grid.coverage["central"] == pytest.approx(1.0, abs=0.02)


def test_flat_map_gives_its_value_and_volume() -> None:
    grid = etdrs_grid(np.full((N, N), 250.0), STEP, "R", (0.0, 0.0))
    assert grid.cst_um == pytest.approx(250.0)
    assert grid.volume_mm3 == pytest.approx(0.25 * math.pi * 9.0)
    assert grid.ring_mean_um("inner") == pytest.approx(250.0)


def test_fovea_is_found_at_the_pit_even_on_a_fluid_dome() -> None:
    x, y = _grid()
    pit = 300.0 - 80.0 * np.exp(-((x - 0.4) ** 2 + (y + 0.3) ** 2) / (2 * 0.25**2))
    dome = 80.0 * np.exp(-((x - 0.1) ** 2 + (y + 0.1) ** 2) / (2 * 1.0**2))
    cx, cy = find_fovea(pit + dome, STEP)
    assert cx == pytest.approx(0.4, abs=0.06) and cy == pytest.approx(-0.3, abs=0.06)


def test_isotropic_resampling_fills_blank_b_scans() -> None:
    t = np.tile(np.linspace(200, 300, 25)[:, None], (1, 64))
    t[10] = np.nan
    iso, step = isotropic(t, (0.25, 6.0 / 63))
    assert step == pytest.approx(6.0 / 63, rel=0.02)
    assert np.isfinite(iso).all()
    assert iso[0, 0] == pytest.approx(200.0) and iso[-1, 0] == pytest.approx(300.0)
    assert iso[iso.shape[0] // 2, 5] == pytest.approx(250.0, abs=1.5)
