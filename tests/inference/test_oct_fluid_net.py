"""The optional OCT fluid model's pure parts (pre- and post-processing), its loading by card,
and measure_oct handing the fluid to it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from appliance.inference.card import DISCLAIMER, ModelIntegrityError
from appliance.inference.oct.fluid import FluidResult
from appliance.inference.oct.fluid_net import STRIDE, FluidNet, post_process, pre_process
from appliance.inference.oct.measure import CLASSICAL_FLUID, measure_oct
from appliance.inference.screener import Screener
from appliance.synth.oct import GEOMETRIES, render_oct
from appliance.synth.oct.dataset import oct_case_for

SPACING = (0.125, 0.0077, 0.0235)  # compact: between B-scans, axial, lateral (mm)


def test_pre_process_pads_to_the_stride_and_scales_each_bscan() -> None:
    rng = np.random.default_rng(0)
    volume = rng.integers(0, 255, (3, 250, 253), dtype=np.uint8)
    volume[1] //= 4  # a dim B-scan is scaled like a bright one
    tensor = pre_process(volume)
    assert tensor.shape == (3, 1, 256, 256) and tensor.dtype == np.float32
    assert tensor.shape[2] % STRIDE == 0 and tensor.shape[3] % STRIDE == 0
    for frame in tensor[:, 0, :250, :253]:
        assert np.percentile(frame, 10) == pytest.approx(0.0, abs=0.02)
        assert np.percentile(frame, 99.5) == pytest.approx(1.0, abs=0.02)
    with pytest.raises(ValueError, match="expected a \\(frames, rows, A-scans\\) volume"):
        pre_process(volume[0])


def _bounds(frames: int, ascans: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((frames, ascans), 40.0), np.full((frames, ascans), 100.0)


def test_post_process_keeps_fluid_inside_the_retina_only() -> None:
    frames, rows, ascans = 9, 128, 96
    prob = np.zeros((frames, rows, ascans), np.float32)
    prob[4, 60:80, 40:56] = 0.9  # a pocket inside the retina, at the scan centre
    prob[2, 5:30, 10:40] = 0.99  # bright "fluid" in the vitreous: ignored
    prob[6, 60:61, 10:11] = 0.9  # one pixel: under the minimum area
    ilm, rpe = _bounds(frames, ascans)
    ilm[7] = np.nan  # a blank B-scan: nothing measured there
    prob[7, 60:80, 40:56] = 0.9
    found = post_process(prob, ilm, rpe, SPACING, (0.0, 0.0))
    assert found.mask.sum() == 20 * 16
    assert found.mask[4, 60:80, 40:56].all()
    area = 16 * SPACING[0] * SPACING[2]
    assert found.centre_area_mm2 == pytest.approx(area)
    assert found.p_centre == pytest.approx(1 - math.exp(-area / 0.01))
    assert found.p_any == pytest.approx(found.p_centre)
    away = post_process(prob, ilm, rpe, SPACING, (2.0, 0.0))  # the fovea 2 mm away
    assert away.p_centre == 0.0 and away.p_any == pytest.approx(found.p_any)
    assert post_process(prob, ilm, rpe, SPACING, (0.0, 0.0), threshold=0.95).p_any == 0.0


def _card(folder: Path, sha: str = "0" * 64) -> Path:
    (folder / "oct-fluid.int8.onnx").write_bytes(b"not a model")
    card = {
        "name": "oct-fluid-demo", "version": "0.1.0", "task": "oct-fluid",
        "disclaimer": DISCLAIMER,
        "files": {"int8": {"path": "oct-fluid.int8.onnx", "sha256": sha}},
        "input": {"size": 256, "channels": 1, "colour": "none"},
        "outputs": {"fluid_logit": {}}, "thresholds": {"pixel": {"value": 0.5}},
    }  # fmt: skip
    path = folder / "oct-fluid.card.json"
    path.write_text(json.dumps(card))
    return path


def test_no_model_installed_means_none(tmp_path: Path) -> None:
    assert FluidNet.find(tmp_path) is None
    assert FluidNet.find(tmp_path / "missing") is None


def test_a_model_file_that_does_not_match_its_card_is_refused(tmp_path: Path) -> None:
    _card(tmp_path)
    with pytest.raises(ModelIntegrityError, match="does not match its card"):
        FluidNet.find(tmp_path)


def test_the_fundus_screener_leaves_oct_models_alone(tmp_path: Path) -> None:
    _card(tmp_path)  # its file does not even match: the screener never opens it
    screener = Screener.load(tmp_path)
    assert screener.sessions == {} and not screener.screening_available


class _Stub:
    method = "stub detector"

    def __init__(self) -> None:
        self.calls = 0

    def detect(
        self,
        volume: np.ndarray,
        ilm_px: np.ndarray,
        rpe_px: np.ndarray,
        spacing_mm: tuple[float, float, float],
        fovea_mm: tuple[float, float],
    ) -> FluidResult:
        self.calls += 1
        assert ilm_px.shape == rpe_px.shape == (volume.shape[0], volume.shape[2])
        return FluidResult(np.zeros(volume.shape, bool), 0.0, 0.0, 0.25, 0.5)


def test_measure_oct_hands_the_fluid_to_the_given_detector() -> None:
    g = GEOMETRIES["small"]
    r = render_oct(oct_case_for(5, 2, "small"))
    classical = measure_oct(r.volume, g.spacing_mm, "R")
    stub = _Stub()
    learned = measure_oct(r.volume, g.spacing_mm, "R", stub)
    assert classical.fluid_method == CLASSICAL_FLUID
    assert learned.fluid_method == "stub detector" and stub.calls == 1
    assert (learned.fluid.p_centre, learned.fluid.p_any) == (0.25, 0.5)
    assert learned.cst_um == classical.cst_um  # only the fluid changes hands
