"""One OCT volume through read → measure → quality, without a store: odd volumes are answered,
never crashed on."""

from __future__ import annotations

import numpy as np
import pytest

from appliance.capture.pixels import Limits
from appliance.pipeline import oct as oct_step
from appliance.synth.oct.dicom import encode_opt, opt_dataset

SPACING = (0.25, 0.0075, 0.0235)


@pytest.mark.parametrize("fill", ["zeros", "noise", "white"])
def test_a_volume_with_no_retina_is_measured_as_not_gradable(fill: str) -> None:
    rng = np.random.default_rng(0)
    volume = {
        "zeros": np.zeros((5, 96, 96), np.uint8),
        "noise": rng.integers(0, 255, (5, 96, 96), dtype=np.uint8),
        "white": np.full((5, 96, 96), 255, np.uint8),
    }[fill]
    analysis = oct_step.analyse_oct(encode_opt(opt_dataset(volume, SPACING, "R")), Limits(), 7)
    assert analysis.status == "measured" and analysis.finding is not None
    assert analysis.finding.gradable is False and analysis.finding.cst_um is None
    assert "oct_low_signal" in analysis.finding.quality_reasons
    assert analysis.message.startswith("OCT not gradable (low signal")
    assert analysis.thickness_um is None and analysis.bscan_layers is not None


def test_a_measurement_that_fails_is_not_analysed(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("lost the RPE")

    monkeypatch.setattr(oct_step, "measure_oct", broken)
    volume = np.full((5, 96, 96), 60, np.uint8)
    analysis = oct_step.analyse_oct(encode_opt(opt_dataset(volume, SPACING, "L")), Limits(), 7)
    assert analysis.status == "not_analysed" and analysis.finding is None
    assert analysis.message == (
        "OCT received and stored; not analysed: the measurement failed (RuntimeError)."
    )
    record = oct_step.oct_json(analysis, {})
    assert record["oct"]["finding"] is None and record["gradable"] is None
    assert record["oct"]["thickness_map"] is None
