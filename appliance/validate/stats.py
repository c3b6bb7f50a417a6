"""The statistics a diagnostic-accuracy report needs, in plain numpy.

* Proportions (sensitivity, specificity, PPV, NPV, ...) with the Wilson score interval
  (Wilson 1927; Newcombe 1998, method 3), exact formula, no continuity correction.
* AUROC as the Mann-Whitney statistic with mid-ranks for ties (a tie counts one half), with
  a percentile bootstrap CI that resamples positives and negatives separately (stratified).
* Quadratic weighted kappa from the confusion matrix, with a percentile bootstrap CI.
* Bootstrap percentile CI of a mean (used for the CDR mean absolute error).
* Reliability bins and the expected calibration error.

Bootstrap resamples are drawn as multinomial counts over the distinct values, which is the same
distribution as drawing rows with replacement, only cheaper.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float64]
Z95 = 1.959963984540054  # standard normal 97.5th percentile
_CELLS_PER_CHUNK = 4_000_000  # bounds the memory of one bootstrap chunk


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for ``k`` successes out of ``n`` (95 % by default)."""
    if n <= 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n > 0, got k={k}, n={n}")
    p = k / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    low = 0.0 if k == 0 else max(0.0, centre - half)
    high = 1.0 if k == n else min(1.0, centre + half)
    return low, high


def proportion(k: int, n: int, reason: str) -> dict[str, object]:
    """``{value, ci_low, ci_high, numerator, denominator}``; value None (+ reason) when n = 0."""
    if n == 0:
        return {
            "value": None,
            "ci_low": None,
            "ci_high": None,
            "numerator": 0,
            "denominator": 0,
            "reason": reason,
        }
    low, high = wilson_interval(k, n)
    return {
        "value": k / n,
        "ci_low": low,
        "ci_high": high,
        "numerator": int(k),
        "denominator": int(n),
    }


def midranks(x: npt.ArrayLike) -> Floats:
    """1-based ranks of ``x``; tied values share the mean of the ranks they span."""
    values = np.asarray(x, dtype=np.float64)
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1], [True])))
    average = (starts[:-1] + 1 + starts[1:]) / 2.0
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = np.repeat(average, np.diff(starts))
    return ranks


def auroc(scores: npt.ArrayLike, labels: npt.ArrayLike) -> float | None:
    """Area under the ROC curve = Mann-Whitney U / (n_pos * n_neg); None with one class."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = midranks(s)
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def _chunks(total: int, width: int) -> list[int]:
    size = max(1, _CELLS_PER_CHUNK // max(1, width))
    return [min(size, total - start) for start in range(0, total, size)]


def percentile_ci(samples: npt.ArrayLike) -> tuple[float, float] | None:
    values = np.asarray(samples, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def bootstrap_auroc(
    scores: npt.ArrayLike, labels: npt.ArrayLike, n_bootstrap: int, rng: np.random.Generator
) -> tuple[float, float] | None:
    """Percentile 95 % CI of the AUROC, resampling positives and negatives separately."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    if n_bootstrap <= 0 or y.all() or not y.any():
        return None
    pos_values, pos_counts = np.unique(s[y], return_counts=True)
    neg_values, neg_counts = np.unique(s[~y], return_counts=True)
    n_pos, n_neg = int(pos_counts.sum()), int(neg_counts.sum())
    # For each distinct positive score: how many distinct negative values lie below / at it.
    below = np.searchsorted(neg_values, pos_values, side="left")
    at_or_below = np.searchsorted(neg_values, pos_values, side="right")
    samples: list[Floats] = []
    for size in _chunks(n_bootstrap, max(pos_values.size, neg_values.size)):
        w_pos = rng.multinomial(n_pos, pos_counts / n_pos, size=size).astype(np.float64)
        w_neg = rng.multinomial(n_neg, neg_counts / n_neg, size=size).astype(np.float64)
        cum = np.concatenate([np.zeros((size, 1)), np.cumsum(w_neg, axis=1)], axis=1)
        wins = cum[:, below] + 0.5 * (cum[:, at_or_below] - cum[:, below])
        samples.append((w_pos * wins).sum(axis=1) / (n_pos * n_neg))
    return percentile_ci(np.concatenate(samples))


def roc_curve(
    scores: npt.ArrayLike, labels: npt.ArrayLike, max_points: int = 201
) -> tuple[list[float], list[float]] | None:
    """ROC points (fpr, tpr) from (0, 0) to (1, 1), one per distinct threshold (thinned)."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(-s, kind="mergesort")
    ordered, hits = s[order], y[order]
    last_of_value = np.flatnonzero(np.concatenate((ordered[1:] != ordered[:-1], [True])))
    tps = np.concatenate(([0], np.cumsum(hits)[last_of_value]))
    fps = np.concatenate(([0], np.cumsum(~hits)[last_of_value]))
    fpr, tpr = fps / n_neg, tps / n_pos
    if fpr.size > max_points:
        keep = np.unique(np.linspace(0, fpr.size - 1, max_points).round().astype(int))
        fpr, tpr = fpr[keep], tpr[keep]
    return [float(v) for v in fpr], [float(v) for v in tpr]


def _kappa(matrices: Floats) -> Floats:
    """Quadratic weighted kappa of a stack of k x k confusion matrices (NaN when undefined)."""
    k = matrices.shape[-1]
    grid = np.arange(k, dtype=np.float64)
    weights = (grid[:, None] - grid[None, :]) ** 2 / max(1, (k - 1) ** 2)
    n = matrices.sum(axis=(-2, -1))
    rows, cols = matrices.sum(axis=-1), matrices.sum(axis=-2)
    expected = rows[..., :, None] * cols[..., None, :] / np.maximum(n, 1)[..., None, None]
    observed_disagreement = (weights * matrices).sum(axis=(-2, -1))
    expected_disagreement = (weights * expected).sum(axis=(-2, -1))
    with np.errstate(divide="ignore", invalid="ignore"):
        kappa = 1.0 - observed_disagreement / expected_disagreement
    return np.where(expected_disagreement > 0, kappa, np.nan)


def quadratic_weighted_kappa(confusion: npt.ArrayLike) -> float | None:
    """Cohen's kappa with weights (i - j)^2 / (k - 1)^2; None when all ratings share one grade
    (no expected disagreement, so kappa is undefined)."""
    value = float(_kappa(np.asarray(confusion, dtype=np.float64)))
    return None if math.isnan(value) else value


def confusion_matrix(truth: npt.ArrayLike, predicted: npt.ArrayLike, k: int = 5) -> np.ndarray:
    t = np.asarray(truth, dtype=np.int64)
    p = np.asarray(predicted, dtype=np.int64)
    return np.bincount(t * k + p, minlength=k * k).reshape(k, k)


def bootstrap_kappa(
    confusion: npt.ArrayLike, n_bootstrap: int, rng: np.random.Generator
) -> tuple[float, float] | None:
    cm = np.asarray(confusion, dtype=np.float64)
    n = int(cm.sum())
    if n_bootstrap <= 0 or n == 0:
        return None
    k = cm.shape[0]
    draws = rng.multinomial(n, cm.ravel() / n, size=n_bootstrap).astype(np.float64)
    return percentile_ci(_kappa(draws.reshape(n_bootstrap, k, k)))


def bootstrap_mean(
    values: npt.ArrayLike, n_bootstrap: int, rng: np.random.Generator
) -> tuple[float, float] | None:
    x = np.asarray(values, dtype=np.float64)
    if n_bootstrap <= 0 or x.size == 0:
        return None
    distinct, counts = np.unique(x, return_counts=True)
    samples = [
        rng.multinomial(x.size, counts / x.size, size=size) @ distinct / x.size
        for size in _chunks(n_bootstrap, distinct.size)
    ]
    return percentile_ci(np.concatenate(samples))


def calibration_bins(
    probabilities: npt.ArrayLike, outcomes: npt.ArrayLike, n_bins: int = 10
) -> tuple[list[dict[str, object]], float | None]:
    """Equal-width reliability bins over [0, 1] (the last includes 1.0) and the ECE,
    ``sum_b n_b / N * |mean predicted_b - observed_b|``."""
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(outcomes, dtype=np.float64)
    which = np.clip(np.floor(p * n_bins), 0, n_bins - 1).astype(int)
    bins: list[dict[str, object]] = []
    ece = 0.0
    for b in range(n_bins):
        inside = which == b
        count = int(inside.sum())
        mean_p = float(p[inside].mean()) if count else None
        observed = float(y[inside].mean()) if count else None
        if mean_p is not None and observed is not None:
            ece += count / p.size * abs(mean_p - observed)
        bins.append(
            {
                "bin_low": b / n_bins,
                "bin_high": (b + 1) / n_bins,
                "n": count,
                "mean_predicted": mean_p,
                "observed": observed,
            }
        )
    return bins, (float(ece) if p.size else None)


def bootstrap_ratio(
    sums: npt.ArrayLike, counts: npt.ArrayLike, n_bootstrap: int, rng: np.random.Generator
) -> tuple[float, float] | None:
    """Percentile 95 % CI of ``sum(sums) / sum(counts)`` resampling the units (e.g. volumes,
    each with the summed error over its A-scans and how many there were) with replacement."""
    s = np.asarray(sums, dtype=np.float64)
    c = np.asarray(counts, dtype=np.float64)
    if n_bootstrap <= 0 or s.size == 0:
        return None
    samples = []
    for size in _chunks(n_bootstrap, s.size):
        weights = rng.multinomial(s.size, np.full(s.size, 1.0 / s.size), size=size)
        with np.errstate(divide="ignore", invalid="ignore"):
            samples.append((weights @ s) / (weights @ c))
    return percentile_ci(np.concatenate(samples))
