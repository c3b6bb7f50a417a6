"""The statistics against hand-worked and textbook values, and their invariants."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from appliance.validate.stats import (
    auroc,
    bootstrap_auroc,
    bootstrap_kappa,
    bootstrap_mean,
    calibration_bins,
    confusion_matrix,
    midranks,
    proportion,
    quadratic_weighted_kappa,
    roc_curve,
    wilson_interval,
)

# --- Wilson score interval -------------------------------------------------------------------


def test_wilson_textbook_81_of_263() -> None:
    low, high = wilson_interval(81, 263)
    assert low == pytest.approx(0.2553, abs=5e-4)
    assert high == pytest.approx(0.3662, abs=5e-4)


def test_wilson_by_hand_and_at_the_edges() -> None:
    # 0/10: upper bound z^2 / (n + z^2) = 3.8415 / 13.8415
    assert wilson_interval(0, 10) == (0.0, pytest.approx(3.841459 / 13.841459, abs=1e-6))
    low, high = wilson_interval(10, 10)
    assert high == 1.0 and low == pytest.approx(10 / 13.841459, abs=1e-6)
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)


@pytest.mark.parametrize(("k", "n"), [(1, 0), (-1, 5), (6, 5)])
def test_wilson_refuses_impossible_counts(k: int, n: int) -> None:
    with pytest.raises(ValueError, match="need 0 <= k <= n"):
        wilson_interval(k, n)


def test_proportion_with_no_denominator_says_why() -> None:
    block = proportion(0, 0, "no reference-positive images")
    assert block["value"] is None and block["ci_low"] is None
    assert block["reason"] == "no reference-positive images"
    assert proportion(3, 4, "x") == {
        "value": 0.75,
        "ci_low": pytest.approx(wilson_interval(3, 4)[0]),
        "ci_high": pytest.approx(wilson_interval(3, 4)[1]),
        "numerator": 3,
        "denominator": 4,
    }


@given(st.integers(1, 5000).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_wilson_contains_the_estimate_and_stays_in_unit_interval(kn: tuple[int, int]) -> None:
    k, n = kn
    low, high = wilson_interval(k, n)
    assert 0.0 <= low <= k / n <= high <= 1.0


# --- AUROC ----------------------------------------------------------------------------------


def test_auroc_small_example_with_ties_by_hand() -> None:
    # positives 0.8, 0.6, 0.6 against negatives 0.6, 0.4: the six pairs score
    # 1, 1, 0.5, 1, 0.5, 1 -> 5/6.
    assert auroc([0.8, 0.6, 0.6, 0.6, 0.4], [1, 1, 1, 0, 0]) == pytest.approx(5 / 6)


def test_auroc_hanley_mcneil_1982_rating_example() -> None:
    # Hanley & McNeil (1982), Radiology 143:29, table 1: CT ratings 1-5, AUC 0.893.
    normal = np.repeat([1, 2, 3, 4, 5], [33, 6, 6, 11, 2])
    abnormal = np.repeat([1, 2, 3, 4, 5], [3, 2, 2, 11, 33])
    scores = np.concatenate([abnormal, normal])
    labels = np.r_[np.ones(51), np.zeros(58)]
    assert auroc(scores, labels) == pytest.approx(0.893, abs=5e-4)
    ci = bootstrap_auroc(scores, labels, 2000, np.random.default_rng(0))
    assert ci is not None
    # Hanley & McNeil's SE is 0.032: the percentile interval is close to 0.893 +- 1.96 * 0.032.
    assert ci[0] == pytest.approx(0.83, abs=0.02) and ci[1] == pytest.approx(0.95, abs=0.02)


def test_auroc_one_class_is_none() -> None:
    assert auroc([0.1, 0.9], [1, 1]) is None
    assert bootstrap_auroc([0.1, 0.9], [0, 0], 100, np.random.default_rng(0)) is None


def test_midranks_share_tied_ranks() -> None:
    assert midranks([3.0, 1.0, 3.0, 2.0]).tolist() == [3.5, 1.0, 3.5, 2.0]


def _pairwise(scores: list[float], labels: list[bool]) -> float:
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


scored = st.lists(
    st.tuples(st.integers(0, 6).map(lambda v: v / 6), st.booleans()), min_size=2, max_size=60
)


@given(scored)
def test_auroc_equals_the_pairwise_definition(pairs: list[tuple[float, bool]]) -> None:
    scores, labels = [p[0] for p in pairs], [p[1] for p in pairs]
    assume(any(labels) and not all(labels))
    assert auroc(scores, labels) == pytest.approx(_pairwise(scores, labels))


@given(scored)
def test_auroc_invariant_to_monotone_transforms(pairs: list[tuple[float, bool]]) -> None:
    scores = np.array([p[0] for p in pairs])
    labels = [p[1] for p in pairs]
    assume(any(labels) and not all(labels))
    value = auroc(scores, labels)
    assert auroc(np.exp(3 * scores) - 7, labels) == pytest.approx(value)
    assert auroc(1 - scores, labels) == pytest.approx(1 - value)  # type: ignore[operator]


@given(st.integers(1, 30), st.integers(1, 30), st.floats(0, 0.49))
def test_auroc_of_separated_scores_is_one_and_reversed_zero(
    n_pos: int, n_neg: int, gap: float
) -> None:
    scores = np.r_[np.linspace(0.5 + gap, 1, n_pos), np.linspace(0, 0.49 - gap, n_neg)]
    labels = np.r_[np.ones(n_pos), np.zeros(n_neg)]
    assert auroc(scores, labels) == 1.0
    assert auroc(-scores, labels) == 0.0


@settings(max_examples=30)
@given(scored, st.integers(0, 2**31))
def test_bootstrap_auroc_interval_is_ordered_and_seeded(
    pairs: list[tuple[float, bool]], seed: int
) -> None:
    scores, labels = [p[0] for p in pairs], [p[1] for p in pairs]
    assume(any(labels) and not all(labels))
    first = bootstrap_auroc(scores, labels, 200, np.random.default_rng(seed))
    again = bootstrap_auroc(scores, labels, 200, np.random.default_rng(seed))
    assert first == again and first is not None
    assert 0.0 <= first[0] <= first[1] <= 1.0


@given(scored)
def test_area_under_the_roc_points_is_the_auroc(pairs: list[tuple[float, bool]]) -> None:
    scores, labels = [p[0] for p in pairs], [p[1] for p in pairs]
    assume(any(labels) and not all(labels))
    curve = roc_curve(scores, labels)
    assert curve is not None
    fpr, tpr = np.array(curve[0]), np.array(curve[1])
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1)
    area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    assert area == pytest.approx(auroc(scores, labels))


def test_roc_curve_is_thinned_to_max_points() -> None:
    rng = np.random.default_rng(1)
    curve = roc_curve(rng.random(5000), rng.random(5000) < 0.3, max_points=101)
    assert curve is not None and len(curve[0]) <= 101
    assert (curve[0][0], curve[0][-1]) == (0.0, 1.0)


# --- Quadratic weighted kappa ---------------------------------------------------------------


def test_kappa_by_hand() -> None:
    # truth 0,0,1,1 vs model 0,1,1,1. Observed weighted disagreement: one (0,1) pair,
    # w = 1/16, over n = 4 -> 1/64. Expected: margins (2,2) x (1,3) -> cells (0,1) = 6/16 and
    # (1,0) = 2/16, each w = 1/16 -> 8/256 = 1/32. kappa = 1 - (1/64)/(1/32) = 0.5.
    cm = confusion_matrix([0, 0, 1, 1], [0, 1, 1, 1])
    assert cm[0, 0] == 1 and cm[0, 1] == 1 and cm[1, 1] == 2 and cm.sum() == 4
    assert quadratic_weighted_kappa(cm) == pytest.approx(0.5)


def test_kappa_of_complete_reversal_is_minus_one() -> None:
    # 10 images 0 -> 4 and 10 images 4 -> 0 (n = 20). Observed weighted disagreement: 20 * 1 / 20
    # = 1. Expected: margins (10, 0, 0, 0, 10) both ways -> cells (0,4) and (4,0) hold 5 each,
    # weight 1 -> 10 / 20 = 0.5. kappa = 1 - 1 / 0.5 = -1.
    cm = np.zeros((5, 5))
    cm[0, 4] = cm[4, 0] = 10
    assert quadratic_weighted_kappa(cm) == pytest.approx(-1.0)


def test_kappa_undefined_when_every_grading_is_one_grade() -> None:
    assert quadratic_weighted_kappa(confusion_matrix([2, 2, 2], [2, 2, 2])) is None


@given(st.lists(st.integers(0, 4), min_size=2, max_size=80))
def test_kappa_is_one_for_identical_gradings(grades: list[int]) -> None:
    assume(len(set(grades)) > 1)
    cm = confusion_matrix(grades, grades)
    assert quadratic_weighted_kappa(cm) == pytest.approx(1.0)
    ci = bootstrap_kappa(cm, 200, np.random.default_rng(0))
    assert ci is not None and ci[0] == pytest.approx(1.0) and ci[1] == pytest.approx(1.0)


@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4)), min_size=2, max_size=80))
def test_kappa_is_symmetric_and_at_most_one(pairs: list[tuple[int, int]]) -> None:
    a, b = [p[0] for p in pairs], [p[1] for p in pairs]
    k_ab = quadratic_weighted_kappa(confusion_matrix(a, b))
    k_ba = quadratic_weighted_kappa(confusion_matrix(b, a))
    assert (k_ab is None) == (k_ba is None)
    if k_ab is not None:
        assert k_ab == pytest.approx(k_ba) and k_ab <= 1.0 + 1e-12


# --- Mean and calibration -------------------------------------------------------------------


def test_bootstrap_mean_of_a_constant_is_that_constant() -> None:
    assert bootstrap_mean([0.2] * 7, 100, np.random.default_rng(0)) == pytest.approx((0.2, 0.2))
    ci = bootstrap_mean(np.linspace(0, 1, 101), 500, np.random.default_rng(0))
    assert ci is not None and ci[0] < 0.5 < ci[1]


def test_calibration_bins_and_ece_by_hand() -> None:
    # Bin 0.1-0.2 holds 0.15, 0.15 (observed 0, 1): |0.15 - 0.5| = 0.35, weight 2/4.
    # Bin 0.9-1.0 holds 0.95 and 1.0 (both observed 1): |0.975 - 1| = 0.025, weight 2/4.
    bins, ece = calibration_bins([0.15, 0.15, 0.95, 1.0], [0, 1, 1, 1])
    assert len(bins) == 10
    assert bins[1] == {
        "bin_low": 0.1,
        "bin_high": 0.2,
        "n": 2,
        "mean_predicted": pytest.approx(0.15),
        "observed": 0.5,
    }
    assert bins[9]["n"] == 2 and bins[0]["n"] == 0 and bins[0]["observed"] is None
    assert ece == pytest.approx(0.5 * 0.35 + 0.5 * 0.025)
