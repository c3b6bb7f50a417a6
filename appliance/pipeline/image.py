"""One photograph through the stages: decode → quality → anatomy → models.

Pure apart from the model sessions it is given; used by the worker and by ``appliance screen``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

import cv2
import numpy as np

from appliance.capture.decode import Limits, decode_rgb
from appliance.domain import ImageFinding, QualityReport
from appliance.inference.anatomy import Anatomy, detect
from appliance.inference.overlay import overlay
from appliance.inference.preprocess import Field, find_field
from appliance.quality import QualityThresholds, assess
from appliance.store import BlobStore

NO_MODEL = {
    "status": "no_model",
    "message": "No screening model installed: image quality was checked, but no diabetic "
    "retinopathy or glaucoma grading was done.",
}
MIN_LATERALITY_CONFIDENCE = 0.5  # below this a detected side neither labels nor contradicts


class ScreenerLike(Protocol):
    @property
    def screening_available(self) -> bool: ...

    def analyse(self, rgb: np.ndarray, field: Field | None = None) -> dict[str, Any]: ...

    def describe(self) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class ImageAnalysis:
    quality: QualityReport | None
    anatomy: Anatomy | None
    screening: dict[str, Any]  # status, message, findings, models
    timings_ms: dict[str, float]
    heatmap: np.ndarray | None = None  # RGB overlay of the DR activation map


def analyse(
    data: bytes,
    limits: Limits,
    thresholds: QualityThresholds,
    *,
    screener: ScreenerLike | None = None,
) -> ImageAnalysis:
    """Run every stage that applies to one encoded photograph (OCT volumes: pipeline/oct.py).
    Raises ApplianceError if undecodable."""
    timings: dict[str, float] = {}
    started = time.perf_counter()
    rgb = decode_rgb(data, limits)
    timings["decode_ms"] = _ms(started)
    started = time.perf_counter()
    report = assess(rgb, thresholds)
    timings["quality_ms"] = _ms(started)
    anatomy = None
    field = None
    if "not_fundus" not in report.reasons:
        started = time.perf_counter()
        field = find_field(rgb)  # shared by laterality detection and every model's crop
        anatomy = detect(rgb, field)
        timings["anatomy_ms"] = _ms(started)
    screening, heatmap = _screen(rgb, report, screener, timings, field)
    return ImageAnalysis(report, anatomy, screening, timings, heatmap)


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


def _screen(
    rgb: np.ndarray,
    report: QualityReport,
    screener: ScreenerLike | None,
    timings: dict[str, float],
    field: Field | None = None,
) -> tuple[dict[str, Any], np.ndarray | None]:
    """Per-image screening findings, or an honest statement of why there are none."""
    if screener is None or not screener.screening_available:
        return dict(NO_MODEL), None
    models = screener.describe()
    if not report.gradable:
        message = (
            "Not graded: the image quality is insufficient ("
            + ", ".join(report.reasons)
            + "). Retake the photograph."
        )
        return {"status": "not_graded", "message": message, "models": models}, None
    findings = screener.analyse(rgb, field)
    cam = findings.pop("heatmap", None)
    timings.update(findings.pop("timings_ms", {}))
    withheld = human_grading_reasons(findings)
    if withheld:
        return {
            "status": "human_grading",
            "reasons": list(withheld),
            "message": "No automated result: "
            + "; ".join(withheld).replace("_", " ")
            + ". A grader will review this photograph.",
            "domain": findings.get("domain"),
            "gradability_model": {
                k: findings[k] for k in ("p_gradable", "quality") if k in findings
            },
            "models": models,
        }, None
    heatmap = None
    if cam is not None:
        started = time.perf_counter()
        heatmap = overlay(rgb, cam)
        timings["heatmap_ms"] = _ms(started)
    return {"status": "screened", "findings": findings, "models": models}, heatmap


def human_grading(screening: dict[str, Any]) -> tuple[str, ...]:
    """Why a person must grade this photograph: its results were withheld (``reasons``), or
    they stand but may not give an automated negative (``human_grading``, e.g. a camera model
    not qualified)."""
    if screening.get("status") == "human_grading":
        return tuple(screening.get("reasons") or ())
    return tuple(screening.get("human_grading") or ())


def human_grading_reasons(findings: dict[str, Any]) -> tuple[str, ...]:
    """Why the models' results on a gate-passed photograph must be withheld for a person.

    One quality verdict: the gate decides whether a photograph is gradable. The gradability
    model is the models' own second opinion on their input; when it calls a gate-passed
    photograph ungradable the two disagree, and the models are out of their depth. So is a
    photograph unlike those they were validated on (the domain guard), or any photograph when
    the models come with no measured domain.
    """
    reasons: list[str] = []
    judged = findings.get("domain")
    if isinstance(judged, dict):
        if judged.get("distance") is None:
            reasons.append("no_domain_reference")
        elif not judged.get("in_domain"):
            reasons.append("out_of_domain")
    if "p_gradable" in findings and not findings.get("gradable", True):
        reasons.append("gradability_model_disagrees")
    return tuple(reasons)


def laterality(analysis: ImageAnalysis, given: str | None) -> tuple[str | None, str | None, bool]:
    """(laterality, source, mismatch): what was given wins; a confident contradiction is flagged."""
    detected = None
    if analysis.anatomy is not None and analysis.anatomy.confidence >= MIN_LATERALITY_CONFIDENCE:
        detected = analysis.anatomy.laterality
    if given in ("L", "R"):
        return given, None, detected is not None and detected != given
    if detected is not None:
        return detected, "detected", False
    return None, None, False


def finding(analysis: ImageAnalysis, capture_id: int | None, given: str | None) -> ImageFinding:
    # a label the detection contradicts is kept as given (``laterality_mismatch``): the photograph
    # counts for neither eye until a person decides (pipeline/eyes.py)
    side, _, mismatch = laterality(analysis, given)
    found = analysis.screening.get("findings") or {}
    report = analysis.quality
    return ImageFinding(
        capture_id=capture_id,
        laterality=side,
        field=analysis.anatomy.field if analysis.anatomy is not None else None,
        gradable=bool(report.gradable) if report is not None else False,
        quality_reasons=tuple(report.reasons) if report is not None else (),
        dr_grade=found.get("dr_grade"),
        p_referable=found.get("p_referable"),
        referable=found.get("referable"),
        p_dme=found.get("p_dme"),
        dme=found.get("dme"),
        cdr=found.get("cdr"),
        p_glaucoma=found.get("p_glaucoma"),
        glaucoma_suspect=found.get("glaucoma_suspect"),
        laterality_mismatch=mismatch,
        human_grading=human_grading(analysis.screening),
    )


def quality_json(report: QualityReport) -> dict[str, Any]:
    return {
        "score": round(report.score, 4),
        "reasons": list(report.reasons),
        "guidance": list(report.guidance),
        "metrics": {key: round(float(value), 5) for key, value in report.metrics.items()},
    }


def _round(value: Any) -> Any:
    return round(float(value), 4) if isinstance(value, float) else value


def image_json(
    analysis: ImageAnalysis, given: str | None, given_source: str | None
) -> dict[str, Any]:
    """The per-image record of ``appliance screen --json`` and of stored results (README)."""
    side, detected_source, mismatch = laterality(analysis, given)
    found = analysis.screening.get("findings") or {}
    out: dict[str, Any] = {
        "gradable": analysis.quality.gradable if analysis.quality is not None else None,
        "quality": quality_json(analysis.quality) if analysis.quality is not None else None,
        "laterality": side,
        "laterality_source": given_source if given in ("L", "R") else detected_source,
        "laterality_detected": analysis.anatomy.laterality if analysis.anatomy else None,
        "laterality_mismatch": mismatch,
        "field": analysis.anatomy.field if analysis.anatomy else None,
        "screening": {k: v for k, v in analysis.screening.items() if k != "findings"},
        "dr": None,
        "dme": None,
        "glaucoma": None,
        "timings_ms": analysis.timings_ms,
    }
    if "dr_grade" in found:
        out["dr"] = {
            "grade": found["dr_grade"],
            "p_referable": _round(found["p_referable"]),
            "referable": found["referable"],
            "grade_probabilities": found.get("grade_probabilities"),
        }
        out["dme"] = {"p": _round(found["p_dme"]), "present": found["dme"]}
    if "cdr" in found:
        out["glaucoma"] = {
            "cdr": _round(found["cdr"]),
            "p_suspect": _round(found["p_glaucoma"]),
            "suspect": found["glaucoma_suspect"],
        }
    if "p_gradable" in found:
        out["gradability_model"] = {
            "p_gradable": _round(found["p_gradable"]),
            "quality": found.get("quality"),
        }
    # The out-of-domain guard's judgement, and why results were withheld (human grading).
    out["domain"] = found.get("domain") or analysis.screening.get("domain")
    out["human_grading"] = list(human_grading(analysis.screening))
    out["camera"] = analysis.screening.get("camera")
    return out


def save_heatmap(blobs: BlobStore, analysis: ImageAnalysis) -> str | None:
    """The analysis's heatmap stored as a PNG blob; its path, or None without one."""
    if analysis.heatmap is None:
        return None
    ok, png = cv2.imencode(".png", cv2.cvtColor(analysis.heatmap, cv2.COLOR_RGB2BGR))
    return blobs.put(png.tobytes(), "image/png") if ok else None
