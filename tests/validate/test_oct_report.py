"""compute_oct_report on hand-made measurements: every figure checked against a count by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from appliance.synth.oct import GEOMETRIES
from appliance.validate.oct_report import OctResult, compute_oct_report
from appliance.validate.oct_set import OctItem, OctSample
from appliance.validate.oct_text import render_text
from appliance.validate.stats import bootstrap_ratio


def _item(i: int, cst: float | None, centre: bool | None, gradable: bool | None) -> OctItem:
    return OctItem(
        name=f"v{i}",
        files=(Path(f"/nowhere/v{i}"),),
        eye="R",
        spacing_mm=(0.125, 0.0039, 0.0117),
        loader=lambda: OctSample(np.zeros((3, 64, 64), np.uint8)),
        cst_um=cst,
        centre_fluid=centre,
        gradable=gradable,
    )


def _result(cst: float, p: float, q: float, err: tuple[float, int] = (10.0, 20)) -> OctResult:
    return OctResult(
        cst_um=cst, p_centre=p, p_any=p, quality_score=q, quality_gradable=q >= 0.5,
        quality_reasons=() if q >= 0.5 else ("oct_motion",), axial_um=4.0,
        ilm_error_px=err, rpe_error_px=(err[0] * 2, err[1]), any_fluid_truth=p > 0.3,
    )  # fmt: skip


CASES = [  # (reference CST, centre fluid, gradable) → (measured CST, fluid score, quality)
    ((250.0, False, True), (255.0, 0.1, 0.9)),  # TN
    ((260.0, False, True), (310.0, 0.1, 0.8)),  # FP by CST (error 50)
    ((320.0, False, True), (318.0, 0.2, 0.9)),  # TP by CST
    ((280.0, True, True), (282.0, 0.9, 0.7)),  # TP by fluid
    ((290.0, True, True), (288.0, 0.2, 0.6)),  # FN: fluid missed, CST under
    ((270.0, False, False), (400.0, 0.9, 0.2)),  # reference-ungradable, caught: left out
    ((270.0, False, True), (270.0, 0.0, 0.3)),  # called ungradable: left out
]


def _report(**kwargs: float) -> dict:
    items = [_item(i, *truth) for i, (truth, _) in enumerate(CASES)]
    results = [_result(*measured) for _, measured in CASES]
    return compute_oct_report(items, results, n_bootstrap=200, **kwargs)  # type: ignore[arg-type]


def test_counts_by_hand() -> None:
    report = _report()
    assert report["ungradable_excluded"] == {
        "total": 2, "truth_ungradable": 1, "predicted_ungradable": 1,
    }  # fmt: skip
    dme = report["ci_dme"]
    assert dme["confusion"] == {"tp": 2, "fp": 1, "tn": 1, "fn": 1}
    assert dme["sensitivity"]["value"] == pytest.approx(2 / 3)
    assert dme["specificity"]["value"] == pytest.approx(1 / 2)
    assert report["cst"]["mae_um"]["value"] == pytest.approx((5 + 50 + 2 + 2 + 2) / 5)
    assert report["cst"]["bias_um"] == pytest.approx((5 + 50 - 2 + 2 - 2) / 5)
    assert report["boundaries"]["ilm"]["mae_px"]["value"] == pytest.approx(0.5)
    assert report["boundaries"]["rpe"]["mae_um"]["value"] == pytest.approx(4.0)
    quality = report["quality"]
    assert quality["n"] == 7 and quality["confusion"] == {"tp": 1, "fp": 1, "tn": 5, "fn": 0}
    assert quality["auroc"]["value"] == pytest.approx(1.0)  # 1 - 0.2 beats every other
    fluid = report["fluid_centre"]
    assert fluid["confusion"] == {"tp": 1, "fp": 0, "tn": 3, "fn": 1}
    assert fluid["auroc"]["value"] == pytest.approx((3 + 2.5) / 6)  # 0.2 ties one 0.2


def test_targets_and_text() -> None:
    targets = {t["key"]: t for t in _report()["targets"]}
    assert targets["cst_mae_um"]["met"] is False  # 12.2 µm
    assert targets["ilm_mae_px"]["met"] is True
    assert targets["ci_dme_sensitivity"]["met"] is False
    text = render_text(_report())
    assert "CST MAE (µm): 12.200 <= 10  NOT MET" in text
    assert "ILM boundary MAE (px): 0.500 <= 2  met" in text


def test_the_threshold_moves_the_reference_and_the_call() -> None:
    dme = _report(cst_threshold_um=265.0)["ci_dme"]
    # reference positives now: 320, 280 (fluid + >= 265), 290; negatives: 250, 260
    assert dme["sensitivity"]["denominator"] == 3 and dme["specificity"]["denominator"] == 2
    assert dme["rule"]["cst_threshold_um"] == 265.0


def test_what_the_set_lacks_is_left_out() -> None:
    items = [_item(i, None, None, None) for i in range(3)]
    results = [_result(300.0, 0.5, 0.9, (0.0, 0)) for _ in range(3)]
    report = compute_oct_report(items, results, n_bootstrap=0)
    assert report["cst"]["mae_um"]["value"] is None and report["cst"]["mae_um"]["reason"]
    assert report["boundaries"]["ilm"]["mae_px"]["reason"] == "no volume with reference boundaries"
    assert report["ci_dme"] is None and report["fluid_centre"] is None
    assert report["quality"] is None
    assert (
        report["fluid_any"]["auroc"]["reason"] == "only one class present (3 positive, 0 negative)"
    )
    assert {t["met"] for t in report["targets"]} == {None}
    assert "not measured" in render_text(report)


def test_bad_thresholds_are_refused() -> None:
    with pytest.raises(ValueError, match="thresholds out of range"):
        _report(fluid_threshold=1.5)


def test_bootstrap_ratio_brackets_the_pooled_value() -> None:
    sums, counts = np.array([1.0, 4.0, 9.0, 2.0]), np.array([10.0, 10.0, 20.0, 5.0])
    low, high = bootstrap_ratio(sums, counts, 500, np.random.default_rng(0)) or (0, 0)
    assert low <= sums.sum() / counts.sum() <= high
    assert bootstrap_ratio(sums, counts, 0, np.random.default_rng(0)) is None


def test_phase_one_measure_report_goes_through_the_harness() -> None:
    from appliance.synth.oct.measure_report import compute_figures

    f = compute_figures(3, 101, "small")
    assert f.n == 3 and 0 < f.gradable <= 3
    assert 0 < f.ilm_mae_px < 2 and 0 < f.rpe_mae_px < 2
    assert f.ilm_mae_um == pytest.approx(f.ilm_mae_px * GEOMETRIES["small"].spacing_mm[1] * 1000)
