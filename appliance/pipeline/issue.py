"""Building what visits owe: each due document built, stored with its outbox jobs and cleared in
one transaction; a failed build counted, retried with backoff, then dead-lettered (audited).

Also the quiet-period sweep: a visit with no new photograph for the quiet period whose images
are not all covered by its newest SR and PDF owes them (recorded as due, then built here).
Runs on the pipeline thread only (``Pipeline`` wires it), so builds never race each other.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from typing import Any

import cv2
import numpy as np

from appliance.audit import AuditTrail, Outcome, events
from appliance.dicom.report_pdf import Clinic
from appliance.domain import VisitOutcome
from appliance.pipeline import due
from appliance.pipeline.documents import BUILDERS, build_sc, owed, visit_images, visit_sources
from appliance.pipeline.due import Due
from appliance.pipeline.eyes import latest as decided
from appliance.pipeline.oct_documents import (
    DEVICE,
    KIND,
    SEG_KIND,
    owed_segmentation,
    owed_thickness_map,
)
from appliance.pipeline.record import insert_derived
from appliance.pipeline.visit import outcome_json
from appliance.store import BlobStore, Store, Tx
from appliance.visits import DerivedObject, ImageRecord, scope_of

LOGGER = logging.getLogger(__name__)


class DocumentIssuer:
    def __init__(
        self,
        store: Store,
        blobs: BlobStore,
        audit: AuditTrail,
        *,
        uid_root: str,
        capture_row: Callable[[int], dict[str, Any] | None],
        outcome_of: Callable[[Any, str, tuple[Any, ...]], VisitOutcome],
        enqueue: Callable[[Tx, str, str, str, str | None], None],
        step: Callable[[str], None],
        clinic: Clinic | None = None,
        device: Mapping[str, str] = DEVICE,
    ) -> None:
        self.device = device  # the appliance as the maker of its documents
        self.builders: dict[str, Callable[..., dict[str, Any]]] = {
            "sr": functools.partial(BUILDERS["sr"], device=device),
            "pdf": functools.partial(BUILDERS["pdf"], clinic=clinic),  # the report's letterhead
        }
        self.store = store
        self.blobs = blobs
        self.audit = audit
        self.uid_root = uid_root
        self.capture_row = capture_row
        self.outcome_of = outcome_of
        self.enqueue = enqueue
        self.step = step

    # -- what is due ---------------------------------------------------------------------
    def issue_due(self, now: float | None = None) -> list[str]:
        """Build everything due by ``now``; returns the visits that were issued documents."""
        rows = due.ready(self.store, now)
        visits: dict[str, list[Due]] = {}
        issued: list[str] = []
        for row in rows:
            if row.kind in ("sc", KIND, SEG_KIND):
                if self._issue_capture(row, now):
                    issued.append(row.visit_key)
            else:
                visits.setdefault(row.visit_key, []).append(row)
        for key, group in visits.items():
            if self._issue_visit(key, group, now):
                issued.append(key)
        return list(dict.fromkeys(issued))

    def _issue_visit(self, key: str, group: list[Due], now: float | None) -> bool:
        """SR and/or PDF for one visit; the ones built are stored, failures counted."""
        row = self.capture_row(group[-1].capture_pk)
        if row is None:
            raise RuntimeError(f"documents due for {key} name a capture that does not exist")
        visit = scope_of(row)
        where, params = visit.where, visit.params
        built: list[tuple[Due, dict[str, Any]]] = []
        nothing_new: list[Due] = []
        failures: list[tuple[Due, str]] = []
        try:
            sources = visit_sources(self.store, self.blobs, key, where, params)
            outcome = self.outcome_of(self.store.reader(), where, params)
            summary = outcome_json(outcome)
        except (Exception, RecursionError) as exc:
            failures = [(d, _reason(exc)) for d in group]
            sources = None
        else:
            for document in group:
                if sources is None or not owed(
                    self.store, key, document.kind, sources.uids, sources.decided_at
                ):
                    nothing_new.append(document)
                    continue
                try:
                    built.append(
                        (
                            document,
                            self.builders[document.kind](
                                self.blobs,
                                sources,
                                visit_key=key,
                                outcome=outcome,
                                outcome_json=summary,
                                uid_root=self.uid_root,
                            ),
                        )
                    )
                except (Exception, RecursionError) as exc:
                    failures.append((document, _reason(exc)))
        if built:
            self.step("documents_built")
        self._store(row, key, built, nothing_new, failures, now)
        return bool(built)

    def _issue_capture(self, document: Due, now: float | None) -> bool:
        """A heatmap SC, or an OCT's thickness map, that could not be made with its capture's
        analysis, or an OCT's Segmentation (always owed by its analysis), made now."""
        row = self.capture_row(document.photo_pk)
        if row is None:
            raise RuntimeError(f"{document.kind} due for capture {document.photo_pk}, now gone")
        built: list[tuple[Due, dict[str, Any]]] = []
        nothing_new: list[Due] = []
        failures: list[tuple[Due, str]] = []
        try:
            if document.kind == KIND:
                sc = owed_thickness_map(self.store, self.blobs, row["id"], self.uid_root,
                                        self.device)  # fmt: skip
            elif document.kind == SEG_KIND:
                sc = owed_segmentation(self.store, self.blobs, row["id"], self.uid_root,
                                       self.device)  # fmt: skip
            else:
                sc = self._build_sc(document, row)
        except (Exception, RecursionError) as exc:
            failures.append((document, _reason(exc)))
        else:
            if sc is None:
                nothing_new.append(document)
            else:
                built.append((document, sc))
        if built:
            self.step("documents_built")
        self._store(row, document.visit_key, built, nothing_new, failures, now)
        return bool(built)

    def _build_sc(self, document: Due, row: dict[str, Any]) -> dict[str, Any] | None:
        done = self.store.scalar(
            "SELECT 1 FROM derived_objects WHERE kind = 'sc' AND capture_pk = ?", (row["id"],)
        )
        result = self.store.one(
            "SELECT payload FROM results WHERE capture_pk = ? AND kind = 'screening' "
            "ORDER BY id DESC LIMIT 1",
            (row["id"],),
        )
        record = ImageRecord.parse(result["payload"] if result else None)
        if done or not record.heatmap:
            return None  # made already, or nothing to make it from
        op = self.store.one(
            "SELECT file_path FROM derived_objects WHERE kind = 'op' AND capture_pk = ?",
            (row["id"],),
        )
        if op is not None:
            source = op["file_path"]
        elif row["media_type"] == "application/dicom" and row["sop_instance_uid"]:
            source = row["file_path"]
        else:
            return None
        png = np.frombuffer(self.blobs.read(record.heatmap), dtype=np.uint8)
        bgr = cv2.imdecode(png, cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError("the stored heatmap PNG cannot be decoded")
        return build_sc(
            self.store,
            self.blobs,
            capture_pk=row["id"],
            visit_key=document.visit_key,
            source_path=source,
            heatmap=cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB),
            laterality=record.finding_laterality,
            uid_root=self.uid_root,
        )

    def _store(
        self,
        row: dict[str, Any],
        key: str,
        built: list[tuple[Due, dict[str, Any]]],
        nothing_new: list[Due],
        failures: list[tuple[Due, str]],
        now: float | None,
    ) -> None:
        """One transaction: documents + their jobs + rows cleared + audit; failures counted."""
        dead: list[tuple[Due, str]] = []
        with self.store.write() as tx:
            for document, derived in built:
                insert_derived(tx, DerivedObject.from_row(derived), key)
                self.enqueue(
                    tx,
                    derived["kind"],
                    derived["sop_instance_uid"],
                    derived["file_path"],
                    derived["study_instance_uid"],
                )
                due.settle(tx, document)
            for document in nothing_new:
                due.settle(tx, document)
            if built:
                self.audit.record(
                    tx,
                    events.pipeline_step(
                        row,
                        Outcome.SUCCESS,
                        {
                            "stage": "documents",
                            "visit": key,
                            "trigger": built[0][0].trigger,
                            "issued": {d["kind"]: d["sop_instance_uid"] for _, d in built},
                        },
                    ),
                )
            for document, reason in failures:
                if due.fail(tx, document, reason, now):
                    dead.append((document, reason))
                    self.audit.record(
                        tx,
                        events.pipeline_step(
                            row,
                            Outcome.SERIOUS_FAILURE,
                            {
                                "stage": "documents",
                                "visit": key,
                                "kind": document.kind,
                                "trigger": document.trigger,
                                "dead_letter": True,
                                "attempts": document.attempts + 1,
                                "reason": reason,
                            },
                        ),
                    )
        for document, reason in failures:
            if (document, reason) in dead:
                LOGGER.error(
                    "%s for %s dead-lettered after %d tries: %s",
                    document.kind, key, document.attempts + 1, reason,
                )  # fmt: skip
            else:
                LOGGER.warning(
                    "%s for %s could not be built (try %d of %d, tried again later): %s",
                    document.kind, key, document.attempts + 1, due.MAX_TRIES, reason,
                )  # fmt: skip

    # -- the quiet period ----------------------------------------------------------------
    def sweep_quiet(self, quiet_seconds: float, now: float) -> list[str]:
        """Record SR + PDF as due for visits quiet for ``quiet_seconds`` whose images are not
        all in their newest documents. Looks at visits with a capture in the last two days."""
        cutoff = due.iso(now - quiet_seconds)
        rows = self.store.query(
            "SELECT c.*, p.patient_id AS patient_identifier, s.study_instance_uid "
            "FROM captures c LEFT JOIN patients p ON p.id = c.patient_pk "
            "LEFT JOIN studies s ON s.id = c.study_pk "
            "WHERE c.status = 'processed' AND c.received_at >= ? ORDER BY c.id DESC",
            (due.iso(now - 2 * 86400),),
        )
        newest: dict[str, dict[str, Any]] = {}
        for row in rows:
            newest.setdefault(scope_of(row).key, row)
        recorded = []
        for key, row in newest.items():
            visit = scope_of(row)
            where, params = visit.where, visit.params
            state = self.store.one(
                "SELECT max(c.received_at) AS latest, sum(c.status = 'received') AS pending "
                f"FROM captures c WHERE {where}",
                params,
            )
            latest = max(
                (state["latest"] if state else None) or "", decided(self.store, where, params)
            )
            latest = latest or None  # a person's eye decision counts as a change, like a photo
            if (state and state["pending"]) or (latest and latest > cutoff):
                continue  # still being photographed or analysed
            if due.is_owed(self.store, key):
                continue  # already due (or dead-lettered, waiting for an admin)
            made = self.store.one(
                "SELECT count(*) AS kinds, min(newest) AS oldest FROM (SELECT max(created_at) "
                "AS newest FROM derived_objects WHERE visit_key = ? AND kind IN ('sr', 'pdf') "
                "GROUP BY kind)",
                (key,),
            )
            if made and made["kinds"] == 2 and latest and made["oldest"] > latest:
                continue  # both were made after its last photograph
            uids = sorted(i["uid"] for i in visit_images(self.store, key, where, params))
            when = decided(self.store, where, params)
            kinds = tuple(k for k in ("sr", "pdf") if uids and owed(self.store, key, k, uids, when))
            if not kinds:
                continue  # its documents reference every image it has
            complete = self.outcome_of(self.store.reader(), where, params).complete
            with self.store.write() as tx:
                due.owe(
                    tx,
                    visit_key=key,
                    kinds=kinds,
                    capture_pk=row["id"],
                    trigger="complete" if complete else "quiet_period",
                    renew=False,
                    now=now,
                )
            recorded.append(key)
        return recorded


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]
