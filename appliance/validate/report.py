"""``compute_report``: a predictor's outputs measured against the reference standard.

The keys are stable; ``appliance/validate/README.md`` documents each one. In short::

    schema, n, imageability, imageability_truth, referable_dr, dme, glaucoma, dr_grade,
    gradability, calibration, subgroups, methods   (+ unreadable, dataset from run_validation)

A proportion is ``{value, ci_low, ci_high, numerator, denominator}`` (Wilson 95 %); an AUROC is
``{value, ci_low, ci_high, n_positive, n_negative}`` (Mann-Whitney, stratified percentile
bootstrap). When a value cannot be computed it is None and a ``reason`` says why; when the
reference standard or the model has nothing for a task, the whole block is None.

Binary tasks (referable DR, DME, glaucoma) are measured on images that are gradable by the
reference standard and that the model called gradable, where those are known (``population``
says which applied); the images left out are counted in ``ungradable_excluded``.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from appliance.validate.labels import Row
from appliance.validate.predictions import prediction_columns
from appliance.validate.stats import (
    auroc,
    bootstrap_auroc,
    bootstrap_kappa,
    bootstrap_mean,
    calibration_bins,
    confusion_matrix,
    proportion,
    quadratic_weighted_kappa,
    roc_curve,
)

LOGGER = logging.getLogger(__name__)

SCHEMA = "appliance.validate/1"
SMALL_SAMPLE = 10
Block = dict[str, Any]
_TRUTH_FIELDS = ("dr_grade", "referable_dr", "dme", "cdr", "glaucoma_suspect", "gradable")


class _Data:
    """Reference and model columns as float arrays (NaN = unknown) plus the population masks."""

    def __init__(
        self, rows: list[Row], preds: list[Mapping[str, Any]], n_bootstrap: int, seed: int
    ):
        if len(rows) != len(preds):
            raise ValueError(f"{len(rows)} rows but {len(preds)} predictions")
        self.rows, self.n_bootstrap, self.seed = rows, n_bootstrap, seed
        self.truth = {
            key: np.array(
                [np.nan if getattr(r, key) is None else float(getattr(r, key)) for r in rows],
                dtype=np.float64,
            )
            for key in _TRUTH_FIELDS
        }
        self.pred = prediction_columns(preds, [r.image for r in rows])
        gradable_t, gradable_p = self.truth["gradable"], self.pred["gradable"]
        self.eligible = (gradable_t != 0) & (gradable_p != 0)  # NaN != 0: unknown keeps it
        self.truth_ungradable = gradable_t == 0
        self.pred_ungradable = (gradable_t != 0) & (gradable_p == 0)
        has_t, has_p = (~np.isnan(gradable_t)).any(), (~np.isnan(gradable_p)).any()
        self.population = (
            "reference-gradable images that the model also called gradable"
            if has_t and has_p
            else "reference-gradable images (the model gives no gradability decision)"
            if has_t
            else "images the model called gradable (no reference gradability labels)"
            if has_p
            else "all images with a reference label (no gradability information)"
        )

    def rng(self, key: str) -> np.random.Generator:
        """An independent stream per statistic, so one CI never depends on another block."""
        return np.random.default_rng([self.seed, zlib.crc32(key.encode())])

    def excluded(self, known: np.ndarray) -> dict[str, int]:
        truth = int((known & self.truth_ungradable).sum())
        predicted = int((known & self.pred_ungradable).sum())
        return {
            "total": truth + predicted,
            "truth_ungradable": truth,
            "predicted_ungradable": predicted,
        }


def _unavailable(reason: str, *, proportion_shape: bool = True) -> Block:
    block: Block = {"value": None, "ci_low": None, "ci_high": None}
    if proportion_shape:
        block.update(numerator=None, denominator=None)
    block["reason"] = reason
    return block


def _auroc(data: _Data, key: str, scores: np.ndarray, positive: np.ndarray, empty: str) -> Block:
    if scores.size == 0:
        return _unavailable(empty, proportion_shape=False)
    n_pos = int(positive.sum())
    n_neg = int(positive.size - n_pos)
    value = auroc(scores, positive)
    if value is None:
        reason = f"only one class present ({n_pos} positive, {n_neg} negative)"
        return _unavailable(reason, proportion_shape=False)
    ci = bootstrap_auroc(scores, positive, data.n_bootstrap, data.rng(key))
    low, high = ci if ci is not None else (None, None)
    return {
        "value": value,
        "ci_low": low,
        "ci_high": high,
        "n_positive": n_pos,
        "n_negative": n_neg,
    }


def _binary_stats(
    data: _Data, key: str, truth: np.ndarray, decision: np.ndarray, score: np.ndarray,
    pop: np.ndarray, names: tuple[str, str], curve: bool = True,
) -> Block:  # fmt: skip
    """Confusion, sensitivity, specificity, PPV, NPV, prevalence and AUROC over ``pop``."""
    positive = truth == 1
    decided = pop & ~np.isnan(decision)
    scored = pop & ~np.isnan(score)
    tp = int((decided & positive & (decision == 1)).sum())
    fn = int((decided & positive & (decision == 0)).sum())
    fp = int((decided & ~positive & (decision == 1)).sum())
    tn = int((decided & ~positive & (decision == 0)).sum())
    n = int(pop.sum())
    block: Block = {"n": n, "prevalence": proportion(int((pop & positive).sum()), n, "no images")}
    if decided.any():
        block["sensitivity"] = proportion(tp, tp + fn, "no reference-positive images")
        block["specificity"] = proportion(tn, tn + fp, "no reference-negative images")
        block["ppv"] = proportion(tp, tp + fp, "the model called no image positive")
        block["npv"] = proportion(tn, tn + fn, "the model called no image negative")
        block["confusion"] = {"tp": tp, "fp": fp, "tn": tn, "fn": fn}
    else:
        reason = f"the model gives no {names[0]!r} decision" if n else "no images"
        for metric in ("sensitivity", "specificity", "ppv", "npv"):
            block[metric] = _unavailable(reason)
        block["confusion"] = None
    empty = f"the model gives no {names[1]!r}" if n else "no images"
    block["auroc"] = _auroc(data, key, score[scored], positive[scored], empty)
    block["missing_decision"] = int((pop & np.isnan(decision)).sum())
    block["missing_score"] = int((pop & np.isnan(score)).sum())
    if curve:
        block["roc"] = None
        points = roc_curve(score[scored], positive[scored]) if scored.any() else None
        if points is not None:
            block["roc"] = {"fpr": points[0], "tpr": points[1]}
    return block


_TASKS = {  # block name: (truth field, decision key, score key)
    "referable_dr": ("referable_dr", "referable", "p_referable"),
    "dme": ("dme", "dme", "p_dme"),
    "glaucoma": ("glaucoma_suspect", "glaucoma_suspect", "p_glaucoma"),
}


def _has_task(data: _Data, task: str) -> bool:
    truth_key, decision_key, score_key = _TASKS[task]
    known = ~np.isnan(data.truth[truth_key])
    told = ~np.isnan(data.pred[decision_key]) | ~np.isnan(data.pred[score_key])
    return bool((known & told).any())


def _task(
    data: _Data, task: str, mask: np.ndarray | None = None, key: str = "", curve: bool = True
) -> Block:
    truth_key, decision_key, score_key = _TASKS[task]
    truth = data.truth[truth_key]
    known = ~np.isnan(truth) if mask is None else ~np.isnan(truth) & mask
    pop = known & data.eligible
    block = {"population": data.population, "ungradable_excluded": data.excluded(known)}
    block.update(
        _binary_stats(
            data, key or task, truth,
            data.pred[decision_key], data.pred[score_key], pop, (decision_key, score_key), curve,
        )
    )  # fmt: skip
    return block


def _cdr(data: _Data, key: str, mask: np.ndarray) -> tuple[Block, float | None, int]:
    pop = mask & data.eligible & ~np.isnan(data.truth["cdr"]) & ~np.isnan(data.pred["cdr"])
    if not pop.any():
        reason = "no image with both a reference and a model CDR"
        return _unavailable(reason, proportion_shape=False), None, 0
    error = data.pred["cdr"][pop] - data.truth["cdr"][pop]
    ci = bootstrap_mean(np.abs(error), data.n_bootstrap, data.rng(key))
    low, high = ci if ci is not None else (None, None)
    mae = {"value": float(np.abs(error).mean()), "ci_low": low, "ci_high": high}
    return mae, float(error.mean()), int(pop.sum())


def _glaucoma(data: _Data) -> Block | None:
    everything = np.ones(len(data.rows), dtype=bool)
    mae, bias, n_cdr = _cdr(data, "glaucoma/cdr_mae", everything)
    if not _has_task(data, "glaucoma"):
        if n_cdr == 0:
            return None
        reason = "no glaucoma_suspect reference label or model output"
        block: Block = {
            "population": data.population,
            "ungradable_excluded": data.excluded(np.zeros(len(data.rows), dtype=bool)),
            "n": 0,
            **{m: _unavailable(reason) for m in ("prevalence", "sensitivity", "specificity")},
            **{m: _unavailable(reason) for m in ("ppv", "npv")},
            "confusion": None,
            "auroc": _unavailable(reason, proportion_shape=False),
            "missing_decision": 0,
            "missing_score": 0,
            "roc": None,
        }
    else:
        block = _task(data, "glaucoma")
    block.update(cdr_mae=mae, cdr_bias=bias, cdr_n=n_cdr)
    return block


def _dr_grade(data: _Data) -> Block | None:
    truth, pred = data.truth["dr_grade"], data.pred["dr_grade"]
    known = ~np.isnan(truth)
    if not (known & ~np.isnan(pred)).any():
        return None
    pop = known & data.eligible & ~np.isnan(pred)
    cm = confusion_matrix(truth[pop].astype(int), pred[pop].astype(int))
    kappa = quadratic_weighted_kappa(cm)
    if kappa is None:
        reason = "every grading falls in one grade; kappa is undefined"
        qwk = _unavailable(reason, proportion_shape=False)
    else:
        ci = bootstrap_kappa(cm, data.n_bootstrap, data.rng("dr_grade/kappa"))
        low, high = ci if ci is not None else (None, None)
        qwk = {"value": kappa, "ci_low": low, "ci_high": high}
    n = int(pop.sum())
    return {
        "population": data.population,
        "ungradable_excluded": data.excluded(known),
        "n": n,
        "missing_prediction": int((known & data.eligible & np.isnan(pred)).sum()),
        "quadratic_weighted_kappa": qwk,
        "accuracy": proportion(int(np.trace(cm)), n, "no images"),
        "confusion_matrix": cm.tolist(),
    }


def _gradability(data: _Data) -> Block | None:
    truth = 1.0 - data.truth["gradable"]  # positive class: ungradable
    known = ~np.isnan(truth)
    decision, score = 1.0 - data.pred["gradable"], 1.0 - data.pred["p_gradable"]
    if not (known & (~np.isnan(decision) | ~np.isnan(score))).any():
        return None
    block: Block = {
        "population": "all images with a reference gradability label",
        "ungradable_excluded": None,
        "positive_class": "ungradable",
    }
    block.update(
        _binary_stats(
            data, "gradability", truth, decision, score, known, ("gradable", "p_gradable")
        )
    )
    return block


def _calibration(data: _Data) -> Block | None:
    truth, score = data.truth["referable_dr"], data.pred["p_referable"]
    pop = data.eligible & ~np.isnan(truth) & ~np.isnan(score)
    if not pop.any():
        return None
    bins, ece = calibration_bins(score[pop], truth[pop])
    return {
        "score": "p_referable",
        "population": data.population,
        "n": int(pop.sum()),
        "bins": bins,
        "ece": ece,
    }


def _imageability(values: np.ndarray, mask: np.ndarray) -> Block | None:
    known = mask & ~np.isnan(values)
    if not known.any():
        return None
    return proportion(int((known & (values == 1)).sum()), int(known.sum()), "no images")


def _subgroups(data: _Data, has_referable: bool, has_cdr: bool) -> Block:
    out: Block = {}
    names = sorted({name for row in data.rows for name in row.subgroups})
    for name in names:
        values = sorted({row.subgroups[name] for row in data.rows if name in row.subgroups})
        out[name] = {}
        for value in values:
            mask = np.array([row.subgroups.get(name) == value for row in data.rows])
            key = f"subgroups/{name}/{value}"
            entry: Block = {"n": int(mask.sum()), "small_sample": bool(mask.sum() < SMALL_SAMPLE)}
            entry["referable_dr"] = None
            if has_referable:
                ref = _task(data, "referable_dr", mask, key + "/referable_dr", curve=False)
                kept = ("n", "sensitivity", "specificity", "auroc")
                entry["referable_dr"] = {k: ref[k] for k in kept}
            entry["glaucoma"] = {"cdr_mae": _cdr(data, key + "/cdr", mask)[0]} if has_cdr else None
            entry["imageability"] = _imageability(data.pred["gradable"], mask)
            out[name][value] = entry
    return out


def compute_report(
    rows: list[Row], preds: list[Mapping[str, Any]], *, n_bootstrap: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """Diagnostic accuracy of ``preds`` (one dict per row, in order) against ``rows``."""
    data = _Data(rows, preds, n_bootstrap, seed)
    everything = np.ones(len(rows), dtype=bool)
    referable = _task(data, "referable_dr") if _has_task(data, "referable_dr") else None
    glaucoma = _glaucoma(data)
    has_cdr = glaucoma is not None and glaucoma["cdr_n"] > 0
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "n": len(rows),
        "imageability": _imageability(data.pred["gradable"], everything),
        "imageability_truth": _imageability(data.truth["gradable"], everything),
        "referable_dr": referable,
        "dme": _task(data, "dme") if _has_task(data, "dme") else None,
        "glaucoma": glaucoma,
        "dr_grade": _dr_grade(data),
        "gradability": _gradability(data),
        "calibration": _calibration(data),
        "subgroups": _subgroups(data, referable is not None, has_cdr),
        "methods": {
            "proportion_ci": "Wilson score interval, 95 %",
            "auroc": "Mann-Whitney U / (n_pos * n_neg), ties count one half",
            "auroc_ci": "percentile bootstrap, positives and negatives resampled separately",
            "kappa_ci": "percentile bootstrap over images",
            "cdr_mae_ci": "percentile bootstrap over images",
            "calibration": "10 equal-width bins of p_referable; "
            "ECE = sum over bins of n_b / N * |mean p_b - observed_b|",
            "n_bootstrap": n_bootstrap,
            "seed": seed,
        },
    }
    LOGGER.info("report computed over %d images", len(rows))
    return report
