"""The worker: received captures → per-image analysis → stored result → visit outcome.

Stages never import each other; this module moves their records between them. The worker
takes captures in ``received`` state (also after a crash or restart, so nothing is skipped),
decodes them off the association thread, runs the stages that exist, and stores the results,
the visit outcome, the documents it makes due (pipeline/due.py) and an audit event in one
transaction; then builds what is due (pipeline/issue.py), as it does at start-up and on every
pass.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict
from typing import Any

from appliance.audit import AuditTrail, Outcome, events
from appliance.capture.decode import OPT_SOP_CLASS, Limits
from appliance.dicom.report_pdf import Clinic
from appliance.domain import CaptureStatus, VisitOutcome
from appliance.errors import ApplianceError
from appliance.loops import BackgroundLoop
from appliance.metrics import Metrics
from appliance.outbox import queue
from appliance.outcome import RuleSet
from appliance.pipeline import cameras, due, eyes, image, oct
from appliance.pipeline import oct_documents as octdocs
from appliance.pipeline.documents import build_sc
from appliance.pipeline.held import Held
from appliance.pipeline.image import ImageAnalysis, ScreenerLike, analyse, finding, image_json
from appliance.pipeline.issue import DocumentIssuer
from appliance.pipeline.record import insert_derived, insert_quality, insert_result
from appliance.pipeline.visit import (
    finding_from_json,
    oct_finding_from_json,
    outcome_json,
    visit_outcome,
)
from appliance.pipeline.wrap import step_request_attributes, visit_study_uid, wrap_photo
from appliance.quality import QualityThresholds
from appliance.store import BlobStore, Store, Tx, utcnow
from appliance.visits import DerivedObject, ImageRecord, Scope, scope_of

LOGGER = logging.getLogger(__name__)
Owed = tuple[str, str] | None  # a derived object's kind and why its build failed


class Pipeline(BackgroundLoop):
    def __init__(
        self,
        store: Store,
        blobs: BlobStore,
        audit: AuditTrail,
        limits: Limits,
        thresholds: QualityThresholds,
        rules: RuleSet,
        screener: ScreenerLike | None = None,
        metrics: Metrics | None = None,
        destinations: tuple[str, ...] = (),
        uid_root: str = "2.25.",
        on_queued: Callable[[], None] = lambda: None,
        quiet_seconds: float = 0.0,
        heatmap_secondary_capture: bool = False,
        camera_model: str = "",
        camera_qualification_required: bool = True,
        clinic: Clinic | None = None,  # printed on every page of the PDF report
        oct_fluid: oct.FluidDetector | None = None,  # the installed oct-fluid model, if any
        device: Mapping[str, str] = octdocs.DEVICE,  # the appliance as the maker of its documents
    ) -> None:
        self.oct_fluid, self.device = oct_fluid, device  # None: fluid by the classical detector
        self.heatmap_secondary_capture = heatmap_secondary_capture  # heatmaps as SC objects too
        self.quiet_seconds = quiet_seconds  # 0: documents only for a complete visit
        self._next_quiet_sweep = 0.0
        self.destinations = destinations
        self.uid_root = uid_root
        self.on_queued = on_queued
        self.rules = rules
        self.screener = screener
        self.camera_model = camera_model
        self.camera_qualification_required = camera_qualification_required
        self.metrics = metrics
        self.store = store
        self.blobs = blobs
        self.audit = audit
        self.limits = limits
        self.thresholds = thresholds
        super().__init__("pipeline", self._pass, 1.0, "pipeline pass failed", join_seconds=30,
                         until_idle=True, logger=LOGGER)  # fmt: skip
        self.listeners: list[Any] = []  # callables(capture_id) told when a capture is done
        self.held = Held()  # captures whose processing raised, held back for a while
        # called with each step's name as it is passed ("analysing", "analysed",
        # "oct_documents_written", "outcome", "documents_built"): tests stop the process there
        # as a crash would
        self.step_hook: Callable[[str], None] = lambda step: None
        self.issuer = DocumentIssuer(
            store,
            blobs,
            audit,
            uid_root=uid_root,
            capture_row=self.capture_row,
            outcome_of=self._outcome,
            enqueue=self._enqueue,
            step=lambda step: self.step_hook(step),
            clinic=clinic,
            device=device,
        )
        if metrics is not None:
            metrics.bind_documents(lambda: due.counts(store))

    # -- worker ---------------------------------------------------------------------------
    def _pass(self) -> int:
        done = self.drain()
        self.issue_due()  # at start-up and on every pass: whatever visits still owe
        if not done and self.quiet_seconds and time.monotonic() >= self._next_quiet_sweep:
            self._next_quiet_sweep = time.monotonic() + min(30.0, self.quiet_seconds)
            self.issue_quiet_visits()
        return done

    def drain(self, limit: int = 50, now: float | None = None) -> int:
        """Process waiting captures, oldest first, except those held back after a failed try
        (pipeline/held.py); returns how many were tried."""
        moment = time.monotonic() if now is None else now
        held = self.held.waiting(moment)
        rows = self.store.query(
            "SELECT id FROM captures WHERE status = ? AND id NOT IN "
            f"({', '.join('?' * len(held))}) ORDER BY id LIMIT ?",
            (str(CaptureStatus.RECEIVED), *held, limit),
        )
        for row in rows:
            if self.stopping:
                break
            try:
                self.process(int(row["id"]))
            except Exception as exc:  # stays received: tried again later, not in a loop
                self._held_back(int(row["id"]), moment, exc)
            else:
                self.held.done(int(row["id"]))
        return len(rows)

    def _held_back(self, capture_id: int, moment: float, exc: Exception) -> None:
        tries, wait = self.held.failed(capture_id, moment)
        LOGGER.exception("capture %d: processing failed; tried again in %d s", capture_id, wait)
        detail = {"stage": "store", "failed": type(exc).__name__, "tries": tries,
                  "message": str(getattr(exc, "message", exc))[:300], "retry_s": wait}  # fmt: skip
        try:  # audited; the object goes to the archive as received while its analysis waits
            row = self.capture_row(capture_id)
            if row is not None:
                with self.store.write() as tx:
                    failed = events.pipeline_step(row, Outcome.SERIOUS_FAILURE, detail)
                    self.audit.record(tx, failed)
                    self._forward_as_received(tx, row)
        except Exception:  # the store itself may be what failed; the log line remains
            LOGGER.exception("capture %d: the failure could not be recorded", capture_id)

    def pending(self) -> int:
        return int(
            self.store.scalar(
                "SELECT count(*) FROM captures WHERE status = ?", (str(CaptureStatus.RECEIVED),)
            )
        )

    def issue_due(self, now: float | None = None) -> int:
        """Build the documents due by ``now`` (pipeline/due.py); returns how many visits got any."""
        return len(self.issuer.issue_due(now))

    def capture_row(self, capture_id: int) -> dict[str, Any] | None:
        """A capture with its patient's and study's identifiers."""
        return self.store.one(
            "SELECT c.*, p.patient_id AS patient_identifier, p.patient_name, p.birth_date, "
            "p.sex, p.issuer, s.study_instance_uid, s.accession_number "
            "FROM captures c LEFT JOIN patients p ON p.id = c.patient_pk "
            "LEFT JOIN studies s ON s.id = c.study_pk WHERE c.id = ?",
            (capture_id,),
        )

    # -- one capture ----------------------------------------------------------------------
    def process(self, capture_id: int) -> None:
        row = self.capture_row(capture_id)
        if row is None or row["status"] != CaptureStatus.RECEIVED:
            return
        scan: oct.OctAnalysis | None = None
        self.step_hook("analysing")
        try:
            data = self.blobs.read(row["file_path"])
            if row["sop_class_uid"] == OPT_SOP_CLASS:
                scan = oct.analyse_oct(data, self.limits, row["id"], self.oct_fluid)
            else:
                analysis = analyse(data, self.limits, self.thresholds, screener=self.screener)
        except ApplianceError as exc:
            self._fail(row, exc.reason, exc.message)
            return
        except Exception as exc:  # a damaged file must not stop the worker
            LOGGER.exception("capture %d could not be analysed", capture_id)
            self._fail(row, "analysis_error", f"{type(exc).__name__}: {exc}"[:300])
            return
        if scan is not None:
            self._process_oct(row, scan)
            return
        self._camera(row, data, analysis)
        self.step_hook("analysed")
        started = time.perf_counter()
        heatmap_path = image.save_heatmap(self.blobs, analysis)
        derived = self._wrap(row, data, analysis)
        sc, sc_error = self._secondary_capture(row, analysis, derived)
        self._store(row, analysis, heatmap_path, derived, sc, sc_error)
        self.step_hook("outcome")
        self.issue_due()
        if self.metrics is not None:
            self._observe(analysis, time.perf_counter() - started)
        self._tell(capture_id)

    def _process_oct(self, row: dict[str, Any], analysis: oct.OctAnalysis) -> None:
        """An OCT volume: arrays saved as blobs, then its record, the audited analysis, the
        visit's outcome, the object forwarded as received, its thickness map (or the map
        owed) and its Segmentation owed, in one transaction; the Segmentation is built next."""
        self.step_hook("analysed")
        record = oct.oct_json(analysis, oct.save_arrays(self.blobs, analysis))
        opm, opm_error = octdocs.map_with_analysis(
            self.blobs, row, record, self.uid_root, self.device
        )
        self.step_hook("oct_documents_written")  # arrays and map on disk, not yet recorded
        detail = oct.audit_detail(analysis)
        with self.store.write() as tx:
            if analysis.quality is not None:
                insert_quality(tx, row["id"], analysis.quality, utcnow())
            insert_result(tx, row["id"], record, utcnow())
            tx.execute(
                "UPDATE captures SET status = ?, status_reason = NULL WHERE id = ?",
                (str(CaptureStatus.PROCESSED), row["id"]),
            )
            self.audit.record(tx, events.pipeline_step(row, Outcome.SUCCESS, detail))
            self.decide_visit(tx, row)
            self._forward_as_received(tx, row)
            self._keep(tx, row, opm, (octdocs.KIND, opm_error) if opm_error is not None else None)
            if octdocs.segmentation_owed(record):  # built by issue_due below, after this commits
                due.owe(tx, visit_key=scope_of(row).key, kinds=(octdocs.SEG_KIND,),
                        capture_pk=row["id"], photo_pk=row["id"], trigger="analysis")  # fmt: skip
        self.step_hook("outcome")
        self.issue_due()
        if self.metrics is not None:
            oct.observe(self.metrics, analysis)
        self._tell(row["id"])

    def _tell(self, capture_id: int) -> None:
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

    def _wrap(
        self, row: dict[str, Any], data: bytes, analysis: ImageAnalysis
    ) -> DerivedObject | None:
        """A photograph with a known eye becomes an OP object (UIDs saved before any send).

        JPEG is wrapped as it came, PNG and TIFF losslessly; DICOM goes as received.
        """
        if row["media_type"] not in ("image/jpeg", "image/png", "image/tiff"):
            return None
        side = finding(analysis, row["id"], row["laterality"]).laterality
        if side not in ("L", "R"):
            return None
        key = scope_of(row).key
        try:
            study = row["study_instance_uid"] or visit_study_uid(self.store, key, self.uid_root)
            field = analysis.anatomy.field if analysis.anatomy is not None else None
            return wrap_photo(
                self.blobs,
                data,
                media_type=row["media_type"],
                row=row,
                laterality=side,
                field=field,
                study_instance_uid=study,
                uid_root=self.uid_root,
                request_attributes=step_request_attributes(
                    self.store, row["study_instance_uid"] or ""
                ),
            )
        except Exception:  # an odd JPEG must not stop its analysis from being stored
            LOGGER.exception("capture %d could not be wrapped as OP", row["id"])
            return None

    def _secondary_capture(
        self, row: dict[str, Any], analysis: ImageAnalysis, op: DerivedObject | None
    ) -> tuple[DerivedObject | None, str | None]:
        """The heatmap as an SC in the source image's study; UIDs saved before any send.

        The source is the OP made from a camera JPEG, or the DICOM the camera sent; a capture
        with neither (a photograph of unknown eye) or without a heatmap gets none. One
        "AI heatmaps" series per visit and study. Returns the SC's row, or why it could not be
        made (then it is owed: recorded as due with the analysis, built again later).
        """
        if not self.heatmap_secondary_capture or analysis.heatmap is None:
            return None, None
        if op is not None:
            path = op.file_path
        elif row["media_type"] == "application/dicom" and row["sop_instance_uid"]:
            path = row["file_path"]
        else:
            return None, None
        try:
            sc = build_sc(
                self.store,
                self.blobs,
                capture_pk=row["id"],
                visit_key=scope_of(row).key,
                source_path=path,
                heatmap=analysis.heatmap,
                laterality=finding(analysis, row["id"], row["laterality"]).laterality,
                uid_root=self.uid_root,
            )
            return DerivedObject.from_row(sc), None
        except (Exception, RecursionError) as exc:  # the analysis is stored; the SC is owed
            LOGGER.exception("capture %d: heatmap Secondary Capture not built", row["id"])
            return None, f"{type(exc).__name__}: {exc}"[:300]

    def _camera(self, row: dict[str, Any], data: bytes, analysis: ImageAnalysis) -> None:
        """Name the photograph's camera model; a model not qualified keeps its results but
        may not give an automated negative (marked for human grading)."""
        model = cameras.camera_model(data, row["source"], self.camera_model)
        qualified = cameras.is_qualified(self.store, model)
        analysis.screening["camera"] = {"model": model, "qualified": qualified}
        if (
            self.camera_qualification_required
            and not qualified
            and analysis.screening.get("status") == "screened"
        ):
            analysis.screening["human_grading"] = [cameras.UNQUALIFIED]

    def _store(
        self,
        row: dict[str, Any],
        analysis: ImageAnalysis,
        heatmap: str | None,
        derived: DerivedObject | None = None,
        sc: DerivedObject | None = None,
        sc_error: str | None = None,
    ) -> VisitOutcome:
        now = utcnow()
        report = analysis.quality
        given = row["laterality"]
        record = image_json(analysis, given, row["laterality_source"])
        record["heatmap"] = heatmap
        record["finding"] = asdict(finding(analysis, row["id"], given))
        with self.store.write() as tx:
            if report is not None:
                insert_quality(tx, row["id"], report, now)
            insert_result(tx, row["id"], {**analysis.screening, **record}, now)
            tx.execute(
                "UPDATE captures SET status = ?, status_reason = NULL WHERE id = ?",
                (str(CaptureStatus.PROCESSED), row["id"]),
            )
            detail = {
                "stage": "analysis", "gradable": None if report is None else report.gradable,
                "reasons": [] if report is None else list(report.reasons),
                "screening": analysis.screening["status"],
                "models": [f"{m['name']}@{m['version']}"
                           for m in analysis.screening.get("models", [])],
                "laterality_mismatch": record["laterality_mismatch"],
            }  # fmt: skip
            self.audit.record(tx, events.pipeline_step(row, Outcome.SUCCESS, detail))
            visit = self.decide_visit(tx, row)
            self._forward_as_received(tx, row)
            self._keep(tx, row, derived)
            self._keep(tx, row, sc, ("sc", sc_error) if sc_error is not None else None)
        return visit

    def _keep(
        self, tx: Tx, row: dict[str, Any], made: DerivedObject | None, failed: Owed = None
    ) -> None:
        """An object made with a capture's analysis, recorded with its outbox jobs; or, when
        its build failed (``failed``: its kind and why), owed: due, built again later."""
        key = scope_of(row).key
        if made is not None:
            insert_derived(tx, made, key)
            self._enqueue(tx, made.kind, made.sop_instance_uid, made.file_path,
                          made.study_instance_uid)  # fmt: skip
        elif failed is not None:
            kind, error = failed
            due.owe(tx, visit_key=key, kinds=(kind,), capture_pk=row["id"], photo_pk=row["id"],
                    trigger="analysis", attempts=1, error=error)  # fmt: skip

    def _outcome(self, db: Any, where: str, params: tuple[Any, ...]) -> VisitOutcome:
        results = db.query(
            "SELECT c.id, r.payload FROM results r JOIN captures c ON c.id = r.capture_pk "
            f"WHERE r.kind = 'screening' AND {where} ORDER BY c.id",
            params,
        )
        decided = eyes.in_force(db, where, params)  # a person's word on a photograph's eye
        findings = []
        octs = []
        for result in results:
            record = ImageRecord.parse(result["payload"])
            scan = record.oct
            if scan is not None and scan.finding is not None:
                volume = eyes.apply_oct(
                    oct_finding_from_json(scan.finding), decided.get(result["id"])
                )
                if volume is not None:
                    octs.append(volume)
            if record.finding is not None:
                counted = eyes.apply(finding_from_json(record.finding), decided.get(result["id"]))
                if counted is not None:
                    findings.append(counted)
        installed = self.screener is not None and self.screener.screening_available
        return visit_outcome(findings, self.rules, installed, octs)

    def decide_visit(self, tx: Tx, row: dict[str, Any], trigger: str = "complete") -> VisitOutcome:
        """The visit's outcome again, stored and audited in ``tx``; a complete visit owes its
        SR and PDF. Another ``trigger`` (a person's eye decision) also renews the documents of
        a visit that has had any, so they say what the visit now is."""
        visit: Scope = scope_of(row)
        key = visit.key
        outcome = self._outcome(tx.db, visit.where, visit.params)
        tx.insert(
            "visit_outcomes",
            {
                "visit_key": key,
                "study_pk": row["study_pk"],
                "patient_pk": row["patient_pk"],
                "code": outcome.code,
                "rule_set": outcome.rule_set,
                "payload": json.dumps(outcome_json(outcome)),
                "created_at": utcnow(),
            },
        )
        detail = {"stage": "outcome", "visit": key, "code": outcome.code,
                  "rule_set": outcome.rule_set}  # fmt: skip
        self.audit.record(tx, events.pipeline_step(row, Outcome.SUCCESS, detail))
        issued = trigger != "complete" and tx.one(
            "SELECT 1 FROM derived_objects WHERE visit_key = ? AND kind IN ('sr', 'pdf')", (key,)
        )
        if outcome.complete or issued:  # owed from this transaction on: a crash cannot lose them
            due.owe(tx, visit_key=key, kinds=("sr", "pdf"), capture_pk=row["id"], trigger=trigger)
        if self.metrics is not None:
            self.metrics.outcomes.labels(code=outcome.code).inc()
        return outcome

    def issue_quiet_visits(self, now: float | None = None) -> int:
        """SR + PDF for visits that have had no new photograph for the quiet period.

        The sweep records them as due (pipeline/issue.py); they are built at once. A visit
        whose images already have documents gets none again. Returns how many visits were
        issued documents after their quiet period.
        """
        moment = time.time() if now is None else now
        recorded = self.issuer.sweep_quiet(self.quiet_seconds, moment)
        issued = self.issuer.issue_due(moment)
        for key in recorded:
            if key in issued:
                LOGGER.info("documents issued for %s after the quiet period", key)
        return len([key for key in recorded if key in issued])

    def _fail(self, row: dict[str, Any], reason: str, message: str) -> None:
        LOGGER.warning("capture %d failed analysis: %s", row["id"], reason)
        with self.store.write() as tx:
            tx.execute(
                "UPDATE captures SET status = ?, status_reason = ? WHERE id = ?",
                (str(CaptureStatus.FAILED), f"{reason}: {message}", row["id"]),
            )
            detail = {"stage": "decode", "failed": reason}
            self.audit.record(tx, events.pipeline_step(row, Outcome.SERIOUS_FAILURE, detail))
            self._forward_as_received(tx, row)

    def _forward_as_received(self, tx: Tx, row: dict[str, Any]) -> None:
        """A capture that arrived as DICOM goes to every archive exactly as received."""
        if row["media_type"] != "application/dicom" or not row["sop_instance_uid"]:
            return
        self._enqueue(
            tx, "received", row["sop_instance_uid"], row["file_path"], row["study_instance_uid"]
        )

    def _enqueue(self, tx: Tx, kind: str, sop_uid: str, path: str, study: str | None) -> None:
        added = [
            queue.enqueue(
                tx,
                kind=kind,
                destination=name,
                sop_instance_uid=sop_uid,
                file_path=path,
                study=study,
            )
            for name in self.destinations
        ]
        if any(added):
            tx.after_commit(self.on_queued)
