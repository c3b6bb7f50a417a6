"""compute_report: hand-checkable numbers, the population rule, and null where nothing is known."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from appliance.validate import Row, compute_report
from appliance.validate.stats import quadratic_weighted_kappa, wilson_interval

TOP_KEYS = {
    "schema",
    "n",
    "imageability",
    "imageability_truth",
    "referable_dr",
    "dme",
    "glaucoma",
    "dr_grade",
    "gradability",
    "calibration",
    "subgroups",
    "methods",
}
BINARY_KEYS = {
    "population",
    "ungradable_excluded",
    "n",
    "prevalence",
    "sensitivity",
    "specificity",
    "ppv",
    "npv",
    "confusion",
    "auroc",
    "missing_decision",
    "missing_score",
    "roc",
}


def _report(rows: list[Row], preds: list[dict[str, Any]], **kwargs: Any) -> dict[str, Any]:
    report = compute_report(rows, preds, n_bootstrap=kwargs.pop("n_bootstrap", 200), **kwargs)
    json.dumps(report, allow_nan=False)  # plain JSON, no NaN
    return report


def test_referable_confusion_and_wilson_intervals_by_hand() -> None:
    truth = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    called = [1, 1, 1, 0, 1, 0, 0, 0, 0, 0]
    rows = [Row(f"{i}.png", dr_grade=3 if t else 0) for i, t in enumerate(truth)]
    preds = [{"referable": bool(c), "p_referable": 0.2 + 0.6 * c} for c in called]
    block = _report(rows, preds)["referable_dr"]
    assert set(block) == BINARY_KEYS
    assert block["confusion"] == {"tp": 3, "fp": 1, "tn": 5, "fn": 1}
    expected = {"sensitivity": (3, 4), "specificity": (5, 6), "ppv": (3, 4), "npv": (5, 6)}
    for metric, (k, n) in expected.items():
        low, high = wilson_interval(k, n)
        assert block[metric] == {
            "value": pytest.approx(k / n),
            "ci_low": pytest.approx(low),
            "ci_high": pytest.approx(high),
            "numerator": k,
            "denominator": n,
        }
    assert block["prevalence"]["value"] == pytest.approx(0.4)
    # Positives score 0.8, 0.8, 0.8, 0.2; negatives 0.8 and 0.2 x 5 (ties count one half):
    # each 0.8 positive wins 0.5 + 5, the 0.2 positive 0 + 5 * 0.5 -> (3 * 5.5 + 2.5) / 24.
    assert block["auroc"]["value"] == pytest.approx(19 / 24)
    assert block["auroc"]["ci_low"] <= 19 / 24 <= block["auroc"]["ci_high"]
    assert (block["auroc"]["n_positive"], block["auroc"]["n_negative"]) == (4, 6)


def test_only_one_class_gives_null_auroc_with_a_reason() -> None:
    rows = [Row(f"{i}.png", dr_grade=0) for i in range(6)]
    preds = [{"referable": False, "p_referable": 0.1 * i} for i in range(6)]
    block = _report(rows, preds)["referable_dr"]
    assert block["auroc"]["value"] is None and block["auroc"]["ci_low"] is None
    assert block["auroc"]["reason"] == "only one class present (0 positive, 6 negative)"
    assert block["sensitivity"]["value"] is None
    assert block["sensitivity"]["reason"] == "no reference-positive images"
    assert block["specificity"]["value"] == 1.0
    assert block["roc"] is None


def test_blocks_are_null_when_truth_or_model_has_nothing() -> None:
    rows = [Row(f"{i}.png", dr_grade=i // 2) for i in range(10)]  # APTOS-like: grades only
    preds = [{"p_referable": i / 10} for i in range(10)]  # the model gives one probability
    report = _report(rows, preds)
    assert set(report) == TOP_KEYS
    for key in ("dme", "glaucoma", "dr_grade", "gradability", "imageability", "imageability_truth"):
        assert report[key] is None, key
    block = report["referable_dr"]
    assert block["confusion"] is None
    assert block["sensitivity"]["reason"] == "the model gives no 'referable' decision"
    assert block["auroc"]["value"] == 1.0  # grades 2-4 got the higher scores
    assert report["calibration"]["n"] == 10
    assert report["subgroups"] == {}
    assert block["population"] == "all images with a reference label (no gradability information)"


def test_model_without_probability_has_no_auroc_but_has_sensitivity() -> None:
    rows = [Row(f"{i}.png", dr_grade=g) for i, g in enumerate([0, 1, 2, 3, 4, 0])]
    preds = [{"dr_grade": g} for g in [0, 2, 2, 3, 1, 0]]  # no 'referable': derived from grade
    report = _report(rows, preds)
    block = report["referable_dr"]
    assert block["confusion"] == {"tp": 2, "fp": 1, "tn": 2, "fn": 1}
    assert block["auroc"] == {
        "value": None,
        "ci_low": None,
        "ci_high": None,
        "reason": "the model gives no 'p_referable'",
    }
    assert report["calibration"] is None
    grade = report["dr_grade"]
    assert grade["confusion_matrix"][4][1] == 1 and grade["accuracy"]["numerator"] == 4
    expected = quadratic_weighted_kappa(np.array(grade["confusion_matrix"]))
    assert grade["quadratic_weighted_kappa"]["value"] == pytest.approx(expected)


def test_ungradable_images_are_excluded_and_counted() -> None:
    rows = [
        Row("a.png", dr_grade=3, gradable=True),
        Row("b.png", dr_grade=0, gradable=True),
        Row("c.png", dr_grade=3, gradable=False),  # reference says ungradable
        Row("d.png", dr_grade=3, gradable=True),  # the model says ungradable
        Row("e.png", gradable=False),  # no DR label at all: not counted for DR
    ]
    preds = [
        {"gradable": True, "p_gradable": 0.9, "referable": True},
        {"gradable": True, "p_gradable": 0.8, "referable": False},
        {"gradable": False, "p_gradable": 0.2, "referable": False},
        {"gradable": False, "p_gradable": 0.4, "referable": False},
        {"gradable": True, "p_gradable": 0.7, "referable": True},
    ]
    report = _report(rows, preds)
    block = report["referable_dr"]
    assert block["n"] == 2 and block["confusion"] == {"tp": 1, "fp": 0, "tn": 1, "fn": 0}
    assert block["ungradable_excluded"] == {
        "total": 2,
        "truth_ungradable": 1,
        "predicted_ungradable": 1,
    }
    assert block["population"] == "reference-gradable images that the model also called gradable"
    assert report["imageability"]["numerator"] == 3 and report["imageability"]["denominator"] == 5
    assert report["imageability_truth"]["value"] == pytest.approx(3 / 5)
    grad = report["gradability"]
    assert grad["positive_class"] == "ungradable"
    # Ungradable c, e; the model called c, d ungradable: TP c, FN e, FP d, TN a, b.
    assert grad["confusion"] == {"tp": 1, "fp": 1, "tn": 2, "fn": 1}
    # 1 - p_gradable for ungradable (0.8, 0.3) vs gradable (0.1, 0.2, 0.6): wins 3 + 2 of 6.
    assert grad["auroc"]["value"] == pytest.approx(5 / 6)


def test_glaucoma_cdr_error_and_bias_by_hand() -> None:
    rows = [Row(f"{i}.png", cdr=c) for i, c in enumerate([0.3, 0.5, 0.7, 0.4])]
    preds = [{"cdr": c} for c in [0.4, 0.3, 0.7, 0.5]]  # errors +0.1, -0.2, 0, +0.1
    block = _report(rows, preds)["glaucoma"]
    assert block["cdr_mae"]["value"] == pytest.approx(0.1)
    assert block["cdr_bias"] == pytest.approx(0.0)
    assert block["cdr_n"] == 4
    assert block["cdr_mae"]["ci_low"] <= 0.1 <= block["cdr_mae"]["ci_high"]
    assert block["sensitivity"]["value"] is None and block["auroc"]["value"] is None
    assert set(BINARY_KEYS) <= set(block)


def test_subgroups_report_small_samples() -> None:
    rows = [
        Row(f"{i}.png", dr_grade=3 * (i % 2), subgroups={"camera": "A" if i < 12 else "B"})
        for i in range(15)
    ]
    preds = [{"p_referable": 0.9 if i % 2 else 0.1, "referable": bool(i % 2)} for i in range(15)]
    groups = _report(rows, preds)["subgroups"]
    assert list(groups) == ["camera"] and list(groups["camera"]) == ["A", "B"]
    a, b = groups["camera"]["A"], groups["camera"]["B"]
    assert (a["n"], a["small_sample"], b["n"], b["small_sample"]) == (12, False, 3, True)
    assert a["referable_dr"]["sensitivity"]["value"] == 1.0
    assert a["referable_dr"]["auroc"]["value"] == 1.0
    assert set(a["referable_dr"]) == {"n", "sensitivity", "specificity", "auroc"}
    assert b["glaucoma"] is None and b["imageability"] is None


def test_same_seed_same_report_and_zero_bootstrap_means_no_intervals() -> None:
    rng = np.random.default_rng(3)
    rows = [Row(f"{i}.png", dr_grade=int(g)) for i, g in enumerate(rng.integers(0, 5, 60))]
    scores, grades = rng.random(60), rng.integers(0, 5, 60)
    preds = [{"p_referable": p, "dr_grade": int(g)} for p, g in zip(scores, grades, strict=True)]
    assert _report(rows, preds, seed=5) == _report(rows, preds, seed=5)
    bare = _report(rows, preds, n_bootstrap=0)
    assert bare["referable_dr"]["auroc"]["ci_low"] is None
    assert bare["referable_dr"]["auroc"]["value"] is not None
    assert bare["dr_grade"]["quadratic_weighted_kappa"]["ci_high"] is None


@pytest.mark.parametrize(
    ("pred", "message"),
    [
        (
            {"p_referable": 1.5},
            r"prediction for 1\.png: 'p_referable' must be a number in \[0, 1\]",
        ),
        ({"p_dme": float("nan")}, r"'p_dme' must be a number in \[0, 1\], got nan"),
        ({"dr_grade": 2.5}, r"'dr_grade' must be an integer 0-4, got 2\.5"),
        ({"referable": "yes"}, r"'referable' must be a bool, got 'yes'"),
    ],
)
def test_out_of_range_predictions_are_refused(pred: dict[str, Any], message: str) -> None:
    rows = [Row("0.png", dr_grade=0), Row("1.png", dr_grade=2)]
    with pytest.raises(ValueError, match=message):
        compute_report(rows, [{"p_referable": 0.5}, pred])


def test_rows_and_predictions_must_pair_up() -> None:
    with pytest.raises(ValueError, match="2 rows but 1 predictions"):
        compute_report([Row("a.png"), Row("b.png")], [{}])
