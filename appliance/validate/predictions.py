"""What a predictor returns, checked and turned into numbers (NaN where the model is silent).

A predictor is any ``Callable[[np.ndarray], Mapping[str, float | int | bool | None]]`` taking
an RGB uint8 image. Every key is optional (missing or None: the model does not do that):

=================  ==========================================================================
``p_gradable``     probability the image is gradable, [0, 1]
``dr_grade``       ICDR grade, integer 0-4
``p_referable``    probability of referable diabetic retinopathy, [0, 1]
``p_dme``          probability of diabetic macular oedema, [0, 1]
``cdr``            vertical cup-to-disc ratio, [0, 1]
``p_glaucoma``     probability of a glaucoma suspect, [0, 1]
``referable``      decision at the model's operating threshold (bool)
``dme``            decision (bool)
``glaucoma_suspect``  decision (bool)
``gradable``       decision (bool)
=================  ==========================================================================

When ``referable`` is missing but ``dr_grade`` is given, the decision is derived exactly as for
the reference standard: grade >= 2 or ``dme``. No threshold is ever invented for a probability.
Other keys are ignored.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

PROBABILITY_KEYS = ("p_gradable", "p_referable", "p_dme", "p_glaucoma")
DECISION_KEYS = ("referable", "dme", "glaucoma_suspect", "gradable")
PREDICTION_KEYS = (*PROBABILITY_KEYS, *DECISION_KEYS, "dr_grade", "cdr")

Predictor = Callable[[np.ndarray], Mapping[str, Any]]


def _fail(image: str, key: str, expected: str, value: object) -> ValueError:
    return ValueError(f"prediction for {image}: {key!r} must be {expected}, got {value!r}")


def _as_number(value: object) -> float | None:
    if isinstance(value, numbers.Real | np.bool_ | np.number):
        return float(value)
    return None


def check_prediction(prediction: Mapping[str, Any], image: str) -> dict[str, float]:
    """Every :data:`PREDICTION_KEYS` entry as a float (NaN when missing); ValueError when a
    value is out of range or of the wrong kind, naming the image and the key."""
    if not isinstance(prediction, Mapping):
        raise TypeError(f"prediction for {image}: expected a dict, got {type(prediction).__name__}")
    checked: dict[str, float] = {}
    for key in PREDICTION_KEYS:
        raw = prediction.get(key)
        if raw is None:
            checked[key] = math.nan
            continue
        value = _as_number(raw)
        if key in DECISION_KEYS:
            if value not in (0.0, 1.0):
                raise _fail(image, key, "a bool", raw)
        elif key == "dr_grade":
            if value is None or not value.is_integer() or not 0 <= value <= 4:
                raise _fail(image, key, "an integer 0-4", raw)
        elif value is None or not 0.0 <= value <= 1.0:  # probabilities and cdr; refuses NaN
            raise _fail(image, key, "a number in [0, 1]", raw)
        checked[key] = float(value)
    return checked


def prediction_columns(
    predictions: list[Mapping[str, Any]], images: list[str]
) -> dict[str, np.ndarray]:
    """One float array per key over all images (NaN where missing); ``referable`` derived."""
    checked = [check_prediction(p, image) for p, image in zip(predictions, images, strict=True)]
    columns = {
        key: np.array([c[key] for c in checked], dtype=np.float64) for key in PREDICTION_KEYS
    }
    grade = columns["dr_grade"]
    derive = np.isnan(columns["referable"]) & ~np.isnan(grade)
    derived = ((grade >= 2) | (columns["dme"] == 1)).astype(np.float64)
    columns["referable"] = np.where(derive, derived, columns["referable"])
    return columns
