"""``compute_oct_report``: OCT measurements against the reference standard (schema
``appliance.validate.oct/1``, keys in ``appliance/validate/README.md``).

Proportions and AUROCs have the fundus report's shapes (Wilson 95 %; Mann-Whitney with a
stratified percentile bootstrap); a mean absolute error is ``{value, ci_low, ci_high, n}``
with a percentile bootstrap over volumes. Measurements and the DME / fluid tasks are measured
on volumes gradable by the reference standard that the quality check also passed (where
those are known); the others are counted in ``ungradable_excluded``. Quality is measured on
every volume with a gradability label.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from appliance.validate.oct_set import OctItem
from appliance.validate.stats import (
    auroc,
    bootstrap_auroc,
    bootstrap_mean,
    bootstrap_ratio,
    proportion,
    roc_curve,
)

LOGGER = logging.getLogger(__name__)

SCHEMA = "appliance.validate.oct/1"
DEFAULT_CST_THRESHOLD_UM = 300.0  # device-neutral ILM-RPE value of the synthetic set
DEFAULT_FLUID_THRESHOLD = 0.5
Block = dict[str, Any]

# Issue #16's targets: (key, words, comparison, target).
TARGETS: tuple[tuple[str, str, str, float], ...] = (
    ("cst_mae_um", "CST MAE (µm)", "<=", 10.0),
    ("ilm_mae_px", "ILM boundary MAE (px)", "<=", 2.0),
    ("rpe_mae_px", "RPE boundary MAE (px)", "<=", 2.0),
    ("ci_dme_sensitivity", "centre-involving DME sensitivity", ">=", 0.95),
    ("ci_dme_specificity", "centre-involving DME specificity", ">=", 0.90),
    ("quality_auroc", "OCT quality AUROC (ungradable detection)", ">=", 0.98),
)


@dataclass(frozen=True)
class OctResult:
    """What the appliance measured on one volume, and its boundary errors against the truth."""

    cst_um: float
    p_centre: float  # fluid score in the central subfield
    p_any: float  # fluid score over the whole scan
    quality_score: float
    quality_gradable: bool
    quality_reasons: tuple[str, ...]
    axial_um: float
    ilm_error_px: tuple[float, int] = (0.0, 0)  # (sum of |error|, A-scans compared)
    rpe_error_px: tuple[float, int] = (0.0, 0)
    any_fluid_truth: bool | None = None  # from the reference mask when the labels lack it


def _nan(value: bool | float | None) -> float:
    return np.nan if value is None else float(value)


class _Columns:
    def __init__(self, items: Sequence[OctItem], results: Sequence[OctResult], seed: int):
        if len(items) != len(results):
            raise ValueError(f"{len(items)} volumes but {len(results)} results")
        self.seed = seed
        self.gradable_t = np.array([_nan(i.gradable) for i in items])
        self.gradable_p = np.array([float(r.quality_gradable) for r in results])
        self.eligible = (self.gradable_t != 0) & (self.gradable_p != 0)
        self.cst_t = np.array([_nan(i.cst_um) for i in items])
        self.cst_p = np.array([r.cst_um for r in results])
        self.centre_t = np.array([_nan(i.centre_fluid) for i in items])
        self.any_t = np.array(
            [_nan(i.any_fluid if i.any_fluid is not None else r.any_fluid_truth)
             for i, r in zip(items, results, strict=True)]
        )  # fmt: skip
        self.label_dme = np.array([_nan(i.ci_dme) for i in items])
        self.p_centre = np.array([r.p_centre for r in results])
        self.p_any = np.array([r.p_any for r in results])
        self.quality = np.array([r.quality_score for r in results])

    def rng(self, key: str) -> np.random.Generator:
        return np.random.default_rng([self.seed, zlib.crc32(key.encode())])

    def excluded(self, known: np.ndarray) -> dict[str, int]:
        truth = int((known & (self.gradable_t == 0)).sum())
        predicted = int((known & (self.gradable_t != 0) & (self.gradable_p == 0)).sum())
        return {"total": truth + predicted, "truth_ungradable": truth,
                "predicted_ungradable": predicted}  # fmt: skip


def _estimate(value: float | None, ci: tuple[float, float] | None, n: int, reason: str) -> Block:
    if value is None or not np.isfinite(value):
        return {"value": None, "ci_low": None, "ci_high": None, "n": n, "reason": reason}
    low, high = ci if ci is not None else (None, None)
    return {"value": float(value), "ci_low": low, "ci_high": high, "n": n}


def _auroc(cols: _Columns, key: str, score: np.ndarray, positive: np.ndarray, n_boot: int) -> Block:
    n_pos, n_neg = int(positive.sum()), int(positive.size - positive.sum())
    value = auroc(score, positive)
    if value is None:
        reason = f"only one class present ({n_pos} positive, {n_neg} negative)"
        return {"value": None, "ci_low": None, "ci_high": None, "reason": reason,
                "n_positive": n_pos, "n_negative": n_neg}  # fmt: skip
    ci = bootstrap_auroc(score, positive, n_boot, cols.rng(key))
    low, high = ci if ci is not None else (None, None)
    return {"value": value, "ci_low": low, "ci_high": high,
            "n_positive": n_pos, "n_negative": n_neg}  # fmt: skip


def _binary(
    cols: _Columns, key: str, truth: np.ndarray, decision: np.ndarray,
    score: np.ndarray | None, pop: np.ndarray, n_boot: int,
) -> Block:  # fmt: skip
    """Sensitivity, specificity, PPV, NPV (Wilson), confusion and AUROC of ``score`` over
    ``pop`` (rows whose truth is unknown are left out)."""
    pop = pop & ~np.isnan(truth)
    pos, called = truth == 1, decision == 1
    tp, fn = int((pop & pos & called).sum()), int((pop & pos & ~called).sum())
    fp, tn = int((pop & ~pos & called).sum()), int((pop & ~pos & ~called).sum())
    n = int(pop.sum())
    block: Block = {
        "n": n,
        "prevalence": proportion(tp + fn, n, "no volumes"),
        "sensitivity": proportion(tp, tp + fn, "no reference-positive volumes"),
        "specificity": proportion(tn, tn + fp, "no reference-negative volumes"),
        "ppv": proportion(tp, tp + fp, "no volume called positive"),
        "npv": proportion(tn, tn + fn, "no volume called negative"),
        "confusion": {"tp": tp, "fp": fp, "tn": tn, "fn": fn},
        "auroc": None,
        "roc": None,
    }
    if score is not None and n:
        block["auroc"] = _auroc(cols, key, score[pop], pos[pop], n_boot)
        points = roc_curve(score[pop], pos[pop])
        block["roc"] = {"fpr": points[0], "tpr": points[1]} if points else None
    return block


def _mae(
    cols: _Columns, key: str, sums: np.ndarray, counts: np.ndarray, scale: float, n_boot: int
) -> Block:
    n = int((counts > 0).sum())
    if not n:
        return _estimate(None, None, 0, "no volume with reference boundaries")
    value = float(sums.sum() / counts.sum())
    ci = bootstrap_ratio(sums[counts > 0], counts[counts > 0], n_boot, cols.rng(key))
    block = _estimate(value * scale, None if ci is None else (ci[0] * scale, ci[1] * scale), n, "")
    block["n_ascans"] = int(counts.sum())
    return block


def _boundaries(cols: _Columns, results: Sequence[OctResult], n_boot: int) -> Block:
    out: Block = {}
    for name in ("ilm", "rpe"):
        pairs = [getattr(r, f"{name}_error_px") for r in results]
        sums = np.array([p[0] for p in pairs], dtype=np.float64) * cols.eligible
        counts = np.array([p[1] for p in pairs], dtype=np.float64) * cols.eligible
        # µm per volume differ when the set mixes devices: weight each volume's errors by its
        # own axial spacing.
        um = np.array([p[0] * r.axial_um for p, r in zip(pairs, results, strict=True)])
        out[name] = {
            "mae_px": _mae(cols, f"{name}/px", sums, counts, 1.0, n_boot),
            "mae_um": _mae(cols, f"{name}/um", um * cols.eligible, counts, 1.0, n_boot),
        }
    return out


def _cst(cols: _Columns, n_boot: int) -> Block:
    pop = cols.eligible & ~np.isnan(cols.cst_t)
    error = cols.cst_p[pop] - cols.cst_t[pop]
    n = int(pop.sum())
    if not n:
        return {"mae_um": _estimate(None, None, 0, "no volume with a reference CST"),
                "bias_um": None, "max_abs_error_um": None}  # fmt: skip
    ci = bootstrap_mean(np.abs(error), n_boot, cols.rng("cst"))
    return {
        "mae_um": _estimate(float(np.abs(error).mean()), ci, n, ""),
        "bias_um": float(error.mean()),
        "max_abs_error_um": float(np.abs(error).max()),
    }


def _targets(report: Block) -> list[Block]:
    def value(path: Sequence[str]) -> float | None:
        node: Any = report
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        return None if node is None else float(node)

    paths = {
        "cst_mae_um": ("cst", "mae_um", "value"),
        "ilm_mae_px": ("boundaries", "ilm", "mae_px", "value"),
        "rpe_mae_px": ("boundaries", "rpe", "mae_px", "value"),
        "ci_dme_sensitivity": ("ci_dme", "sensitivity", "value"),
        "ci_dme_specificity": ("ci_dme", "specificity", "value"),
        "quality_auroc": ("quality", "auroc", "value"),
    }
    rows = []
    for key, words, comparison, target in TARGETS:
        measured = value(paths[key])
        met = None if measured is None else (
            measured <= target if comparison == "<=" else measured >= target
        )  # fmt: skip
        rows.append({"key": key, "words": words, "comparison": comparison,
                     "target": target, "value": measured, "met": met})  # fmt: skip
    return rows


def _proportion_of(values: np.ndarray) -> Block | None:
    known = ~np.isnan(values)
    if not known.any():
        return None
    return proportion(int((values[known] == 1).sum()), int(known.sum()), "no volumes")


def _quality(cols: _Columns, n_bootstrap: int) -> Block | None:
    """The quality check as a detector of ungradable volumes (score: 1 - quality score)."""
    ungradable = 1.0 - cols.gradable_t
    if np.isnan(ungradable).all():
        return None
    block = _binary(
        cols, "quality", ungradable, 1.0 - cols.gradable_p, 1.0 - cols.quality,
        ~np.isnan(ungradable), n_bootstrap,
    )  # fmt: skip
    block["positive_class"] = "ungradable"
    block["population"] = "every volume with a reference gradability label"
    return block


def compute_oct_report(
    items: Sequence[OctItem], results: Sequence[OctResult], *,
    cst_threshold_um: float = DEFAULT_CST_THRESHOLD_UM,
    fluid_threshold: float = DEFAULT_FLUID_THRESHOLD, n_bootstrap: int = 1000, seed: int = 0,
) -> dict[str, Any]:  # fmt: skip
    """The OCT report of ``results`` (one per item, in order) against ``items``' truth."""
    if not 0.0 < fluid_threshold < 1.0 or not 0.0 < cst_threshold_um < 1000.0:
        raise ValueError(f"thresholds out of range: {cst_threshold_um} µm, {fluid_threshold}")
    cols = _Columns(items, results, seed)
    everything = np.ones(len(items), dtype=bool)
    # Centre-involving DME by the rule, on the reference values when both are known.
    derived = np.where(
        np.isnan(cols.cst_t) | np.isnan(cols.centre_t),
        cols.label_dme,
        ((cols.cst_t >= cst_threshold_um) | (cols.centre_t == 1)).astype(np.float64),
    )
    called = (cols.cst_p >= cst_threshold_um) | (cols.p_centre >= fluid_threshold)
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "n": len(items),
        "population": "reference-gradable volumes that the quality check also passed",
        "ungradable_excluded": cols.excluded(everything),
        "imageability": _proportion_of(cols.gradable_p),
        "imageability_truth": _proportion_of(cols.gradable_t),
        "cst": _cst(cols, n_bootstrap),
        "boundaries": _boundaries(cols, results, n_bootstrap),
        "ci_dme": None,
        "fluid_centre": None,
        "fluid_any": None,
        "quality": _quality(cols, n_bootstrap),
    }
    if not np.isnan(derived).all():
        report["ci_dme"] = _binary(cols, "ci_dme", derived, called.astype(np.float64),
                                   None, cols.eligible, n_bootstrap)  # fmt: skip
        report["ci_dme"]["rule"] = {
            "cst_threshold_um": cst_threshold_um,
            "fluid_threshold": fluid_threshold,
            "called": "measured CST >= threshold or central fluid score >= fluid threshold",
            "reference": "reference CST >= threshold or reference central fluid "
            "(the set's ci_dme label where either is unknown)",
        }
    for key, truth, score in (("fluid_centre", cols.centre_t, cols.p_centre),
                              ("fluid_any", cols.any_t, cols.p_any)):  # fmt: skip
        if not np.isnan(truth).all():
            decision = (score >= fluid_threshold).astype(np.float64)
            report[key] = _binary(cols, key, truth, decision, score, cols.eligible, n_bootstrap)
    report["targets"] = _targets(report)
    report["methods"] = {
        "proportion_ci": "Wilson score interval, 95 %",
        "auroc": "Mann-Whitney U / (n_pos * n_neg), ties count one half",
        "auroc_ci": "percentile bootstrap, positives and negatives resampled separately",
        "mae_ci": "percentile bootstrap over volumes (boundary MAE: pooled over A-scans)",
        "boundary_error": "|measured - reference| per A-scan where both are known and the "
        "reference lies inside the frame",
        "targets": "met on the point estimate (issue #16)",
        "n_bootstrap": n_bootstrap,
        "seed": seed,
    }
    LOGGER.info("OCT report computed over %d volumes", len(items))
    return report
