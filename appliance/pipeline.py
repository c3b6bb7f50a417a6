"""The one place that wires the stages: capture → quality → (inference → outcome) → store.

Stages never import each other; this module moves their records between them. The worker
takes captures in ``received`` state (also after a crash or restart, so nothing is skipped),
decodes them off the association thread, runs the stages that exist, and stores the results
and an audit event in one transaction.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np

from appliance.audit import Action, AuditEvent, AuditTrail, EventID, Outcome
from appliance.capture.decode import OPT_SOP_CLASS, Limits, decode_rgb, sniff
from appliance.domain import CaptureStatus, QualityReport
from appliance.errors import ApplianceError
from appliance.metrics import Metrics
from appliance.quality import QualityThresholds, assess
from appliance.store import BlobStore, Store, utcnow

LOGGER = logging.getLogger(__name__)

NO_MODEL = {
    "status": "no_model",
    "message": "No screening model installed: image quality was checked, but no diabetic "
    "retinopathy or glaucoma grading was done.",
}
NOT_ANALYSED_OPT = {
    "status": "not_analysed",
    "message": "OCT (ophthalmic tomography) received and stored; the quality gate and the "
    "screening models apply to fundus photographs only.",
}


class ScreenerLike(Protocol):
    @property
    def screening_available(self) -> bool: ...

    def analyse(self, rgb: np.ndarray) -> dict[str, Any]: ...

    def describe(self) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class ImageAnalysis:
    quality: QualityReport | None
    screening: dict[str, Any]
    timings_ms: dict[str, float]


def analyse(
    data: bytes,
    limits: Limits,
    thresholds: QualityThresholds,
    *,
    is_oct: bool = False,
    screener: ScreenerLike | None = None,
) -> ImageAnalysis:
    """Run the stages that exist on one encoded image. Raises ApplianceError if undecodable."""
    if is_oct:
        return ImageAnalysis(None, dict(NOT_ANALYSED_OPT), {})
    started = time.perf_counter()
    rgb = decode_rgb(data, limits)
    decoded = time.perf_counter()
    report = assess(rgb, thresholds)
    assessed = time.perf_counter()
    timings = {
        "decode_ms": round((decoded - started) * 1000, 2),
        "quality_ms": round((assessed - decoded) * 1000, 2),
    }
    return ImageAnalysis(report, screen(rgb, report, screener, timings), timings)


def screen(
    rgb: np.ndarray,
    report: QualityReport,
    screener: ScreenerLike | None,
    timings: dict[str, float],
) -> dict[str, Any]:
    """Per-image screening findings, or an honest statement of why there are none."""
    if screener is None or not screener.screening_available:
        return dict(NO_MODEL)
    models = screener.describe()
    if not report.gradable:
        return {
            "status": "not_graded",
            "message": "Not graded: the image quality is insufficient ("
            + ", ".join(report.reasons)
            + "). Retake the photograph.",
            "models": models,
        }
    findings = screener.analyse(rgb)
    findings.pop("heatmap", None)
    timings.update(findings.pop("timings_ms", {}))
    return {"status": "screened", "findings": findings, "models": models}


def quality_json(report: QualityReport) -> dict[str, Any]:
    return {
        "score": round(report.score, 4),
        "reasons": list(report.reasons),
        "guidance": list(report.guidance),
        "metrics": {key: round(float(value), 5) for key, value in report.metrics.items()},
    }


class Pipeline:
    def __init__(
        self,
        store: Store,
        blobs: BlobStore,
        audit: AuditTrail,
        limits: Limits,
        thresholds: QualityThresholds,
        screener: ScreenerLike | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.screener = screener
        self.metrics = metrics
        self.store = store
        self.blobs = blobs
        self.audit = audit
        self.limits = limits
        self.thresholds = thresholds
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.listeners: list[Any] = []  # callables(capture_id) told when a capture is done

    # -- worker ---------------------------------------------------------------------------
    def notify(self, capture_id: int) -> None:
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="pipeline", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                done = self.drain()
            except Exception:
                LOGGER.exception("pipeline pass failed")
                done = 0
            if not done:
                self._wake.wait(1.0)
                self._wake.clear()

    def drain(self, limit: int = 50) -> int:
        """Process waiting captures, oldest first; returns how many were processed."""
        rows = self.store.query(
            "SELECT id FROM captures WHERE status = ? ORDER BY id LIMIT ?",
            (str(CaptureStatus.RECEIVED), limit),
        )
        for row in rows:
            if self._stop.is_set():
                break
            self.process(int(row["id"]))
        return len(rows)

    def pending(self) -> int:
        return int(
            self.store.scalar(
                "SELECT count(*) FROM captures WHERE status = ?", (str(CaptureStatus.RECEIVED),)
            )
        )

    # -- one capture ----------------------------------------------------------------------
    def process(self, capture_id: int) -> None:
        row = self.store.one(
            "SELECT c.*, p.patient_id AS patient_identifier, s.study_instance_uid "
            "FROM captures c LEFT JOIN patients p ON p.id = c.patient_pk "
            "LEFT JOIN studies s ON s.id = c.study_pk WHERE c.id = ?",
            (capture_id,),
        )
        if row is None or row["status"] != CaptureStatus.RECEIVED:
            return
        try:
            data = self.blobs.read(row["file_path"])
            sniff(data)
            analysis = analyse(
                data,
                self.limits,
                self.thresholds,
                is_oct=row["sop_class_uid"] == OPT_SOP_CLASS,
                screener=self.screener,
            )
        except ApplianceError as exc:
            self._fail(row, exc.reason, exc.message)
            return
        except Exception as exc:  # a damaged file must not stop the worker
            LOGGER.exception("capture %d could not be analysed", capture_id)
            self._fail(row, "analysis_error", f"{type(exc).__name__}: {exc}"[:300])
            return
        started = time.perf_counter()
        self._store(row, analysis)
        if self.metrics is not None:
            self._observe(analysis, time.perf_counter() - started)
        for listener in list(self.listeners):
            try:
                listener(capture_id)
            except Exception:
                LOGGER.exception("pipeline listener failed")

    def _observe(self, analysis: ImageAnalysis, store_seconds: float) -> None:
        assert self.metrics is not None
        for key, value in analysis.timings_ms.items():
            self.metrics.stage_seconds.labels(stage=key.removesuffix("_ms")).observe(value / 1000)
        self.metrics.stage_seconds.labels(stage="store").observe(store_seconds)
        gradable = "unknown" if analysis.quality is None else str(analysis.quality.gradable).lower()
        self.metrics.analysed.labels(
            gradable=gradable, screening=analysis.screening["status"]
        ).inc()

    def _event(self, row: dict[str, Any], outcome: Outcome, detail: dict[str, Any]) -> AuditEvent:
        return AuditEvent(
            event_id=EventID.INSTANCES_ACCESSED,
            action=Action.EXECUTE,
            user_id="system:pipeline",
            outcome=outcome,
            patient_id=row["patient_identifier"] or "",
            study_instance_uid=row["study_instance_uid"] or "",
            sop_instance_uids=[row["sop_instance_uid"]] if row["sop_instance_uid"] else [],
            detail={"capture_id": row["id"], **detail},
        )

    def _store(self, row: dict[str, Any], analysis: ImageAnalysis) -> None:
        now = utcnow()
        report = analysis.quality
        with self.store.write() as tx:
            if report is not None:
                tx.insert(
                    "quality_reports",
                    {
                        "capture_pk": row["id"],
                        "gradable": int(report.gradable),
                        "score": float(report.score),
                        "reasons": json.dumps(list(report.reasons)),
                        "guidance": json.dumps(list(report.guidance)),
                        "metrics": json.dumps({k: float(v) for k, v in report.metrics.items()}),
                        "field_geometry": json.dumps(asdict(report.field_geometry))
                        if report.field_geometry
                        else None,
                        "created_at": now,
                    },
                )
            tx.insert(
                "results",
                {
                    "capture_pk": row["id"],
                    "kind": "screening",
                    "payload": json.dumps(
                        {**analysis.screening, "timings_ms": analysis.timings_ms}
                    ),
                    "created_at": now,
                },
            )
            tx.execute(
                "UPDATE captures SET status = ?, status_reason = NULL WHERE id = ?",
                (str(CaptureStatus.PROCESSED), row["id"]),
            )
            self.audit.record(
                tx,
                self._event(
                    row,
                    Outcome.SUCCESS,
                    {
                        "stage": "quality",
                        "gradable": None if report is None else report.gradable,
                        "reasons": [] if report is None else list(report.reasons),
                        "screening": analysis.screening["status"],
                    },
                ),
            )

    def _fail(self, row: dict[str, Any], reason: str, message: str) -> None:
        LOGGER.warning("capture %d failed analysis: %s", row["id"], reason)
        with self.store.write() as tx:
            tx.execute(
                "UPDATE captures SET status = ?, status_reason = ? WHERE id = ?",
                (str(CaptureStatus.FAILED), f"{reason}: {message}", row["id"]),
            )
            self.audit.record(
                tx, self._event(row, Outcome.SERIOUS_FAILURE, {"stage": "decode", "failed": reason})
            )
