"""Model outputs → findings: pure numpy, tested without a session."""

from __future__ import annotations

from typing import Any

import numpy as np

GRADABILITY_LABELS = ("good", "usable", "reject")
DR_LABELS = ("no apparent DR", "mild NPDR", "moderate NPDR", "severe NPDR", "proliferative DR")


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, np.float64).reshape(-1)
    z = np.exp(z - z.max())
    return z / z.sum()


def sigmoid(x: Any) -> float:
    return float(1.0 / (1.0 + np.exp(-float(np.asarray(x).reshape(-1)[0]))))


def gradability(outputs: dict[str, np.ndarray], thresholds: dict[str, float]) -> dict[str, Any]:
    probs = softmax(outputs["quality_logits"])
    p_gradable = float(1.0 - probs[2])
    return {
        "p_quality": {
            label: round(float(p), 5) for label, p in zip(GRADABILITY_LABELS, probs, strict=True)
        },
        "quality": GRADABILITY_LABELS[int(np.argmax(probs))],
        "p_gradable": p_gradable,
        "gradable": p_gradable >= thresholds["gradable"],
    }


def dr(outputs: dict[str, np.ndarray], thresholds: dict[str, float]) -> dict[str, Any]:
    probs = softmax(outputs["grade_logits"])
    p_referable = sigmoid(outputs["referable_logit"])
    p_dme = sigmoid(outputs["dme_logit"])
    return {
        "grade_probabilities": [round(float(p), 5) for p in probs],
        "dr_grade": int(np.argmax(probs)),
        "p_referable": p_referable,
        "referable": p_referable >= thresholds["referable"],
        "p_dme": p_dme,
        "dme": p_dme >= thresholds["dme"],
    }


def glaucoma(outputs: dict[str, np.ndarray], thresholds: dict[str, float]) -> dict[str, Any]:
    cdr = float(np.clip(np.asarray(outputs["cdr"]).reshape(-1)[0], 0.0, 1.0))
    p_suspect = sigmoid(outputs["suspect_logit"])
    return {
        "cdr": cdr,
        "p_glaucoma": p_suspect,
        "glaucoma_suspect": p_suspect >= thresholds["suspect"],
    }


def heatmap(outputs: dict[str, np.ndarray]) -> np.ndarray | None:
    """The class-activation map for referable DR, scaled to [0, 1] (None if not exported)."""
    cam = outputs.get("cam")
    if cam is None:
        return None
    arr = np.maximum(np.asarray(cam, np.float32).reshape(cam.shape[-2], cam.shape[-1]), 0)
    peak = float(arr.max())
    return arr / peak if peak > 0 else arr


POSTPROCESS = {"gradability": gradability, "dr": dr, "glaucoma": glaucoma}
