"""The station's look back: a patient's visits, today's finished ones, patient search, and one
earlier visit reopened read-only with its newest report to reprint.

A visit here is the pipeline's visit (``appliance/visits.py``: its study, else the patient's
photographs that day), named by its key. Nothing here changes a visit: the reopened visit shows
what the station showed (photographs with verdicts, checklist, outcome, the decision in force
and who signed it) and serves its thumbnails and its newest PDF report, each only for a
photograph or report of that very visit. Searches are audited here as queries (110112, with
the patients they found); what the web shows of a visit is audited by the web as a view.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import Any

from appliance.audit import AuditTrail, events
from appliance.capture.decode import Limits
from appliance.desks.station_view import (
    CaptureView,
    EyeCheck,
    NotFound,
    Report,
    capture_view,
    checklist,
    mark_superseded,
    report,
    signed_line,
    thumbnail,
)
from appliance.errors import RejectedInput
from appliance.pipeline import eyes
from appliance.store import BlobStore, Store
from appliance.visits import VisitNotFound, scope

SEARCH_LIMIT = 50  # visits a search lists at most; more found says "refine the search"
HISTORY_LIMIT = 20  # earlier visits listed for the chosen patient
MIN_QUERY, MAX_QUERY, MAX_TERMS = 2, 64, 4
# The pipeline's visit key of a capture row, in SQL (appliance/visits.py visit_key, for rows
# with a patient): the study, else the patient that UTC day.
KEY_SQL = (
    "CASE WHEN c.study_pk IS NOT NULL THEN 'study:' || c.study_pk "
    "ELSE 'patient:' || c.patient_pk || ':' || substr(c.received_at, 1, 10) END"
)


@dataclass(frozen=True)
class VisitLine:
    """One visit in a list: whose, when, how many photographs, the outcome and its sign-off."""

    visit_key: str
    patient_id: str
    issuer: str
    patient_name: str
    birth_date: str
    first_received: str  # ISO 8601 UTC
    photos: int
    outcome_code: str  # "" until the photographs are checked
    outcome_text: str
    signed: str  # "Signed by …" for the outcome in force, else ""
    report_id: int | None  # the newest PDF report still held


@dataclass(frozen=True)
class SearchResult:
    query: str
    visits: tuple[VisitLine, ...]
    more: bool  # more visits matched than are listed


@dataclass(frozen=True)
class PastVisit:
    """An earlier visit as the station shows it, read-only (the template of the live visit
    reads ``captures``, ``eyes``, ``outcome``, ``signed``, ``refused``, ``report_id``)."""

    line: VisitLine
    study_instance_uid: str
    captures: tuple[CaptureView, ...]
    eyes: tuple[EyeCheck, ...]
    outcome: dict[str, Any] | None
    report_id: int | None
    report_purged: bool  # the newest report was deleted under the retention policy
    signed: str
    refused: tuple[()] = ()

    @property
    def visit_key(self) -> str:
        return self.line.visit_key

    @property
    def sop_instance_uids(self) -> list[str]:
        return [c.sop_instance_uid for c in self.captures if c.sop_instance_uid]


def _casefold(value: object) -> str:
    return str(value or "").casefold()


def search_terms(query: str) -> tuple[str, ...]:
    """The words of a search (commas and ``^`` count as spaces); refused when too short or
    too long."""
    text = " ".join(query.replace(",", " ").replace("^", " ").split())
    if len(text) < MIN_QUERY:
        raise RejectedInput(
            f"Type at least {MIN_QUERY} characters of the Patient ID or name.",
            reason="search_too_short",
        )
    if len(text) > MAX_QUERY:
        raise RejectedInput(f"Type at most {MAX_QUERY} characters.", reason="search_too_long")
    return tuple(text.split(" ")[:MAX_TERMS])


class History:
    def __init__(
        self, store: Store, blobs: BlobStore, audit: AuditTrail, limits: Limits, station_ae: str
    ) -> None:
        self.store = store
        self.blobs = blobs
        self.audit = audit
        self.limits = limits
        self.station_ae = station_ae

    # -- lists -------------------------------------------------------------------------------
    def _lines(self, where: str, params: tuple[Any, ...], limit: int) -> list[VisitLine]:
        rows = self.store.query(
            f"SELECT {KEY_SQL} AS visit_key, min(c.received_at) AS first_received, "
            "count(*) AS photos, p.patient_id, p.issuer, p.patient_name, p.birth_date "
            "FROM captures c JOIN patients p ON p.id = c.patient_pk "
            f"WHERE {where} GROUP BY 1 ORDER BY first_received DESC, 1 DESC LIMIT ?",
            (*params, limit),
        )
        return [self._line(row) for row in rows]

    def _line(self, row: dict[str, Any]) -> VisitLine:
        key = row["visit_key"]
        outcome = self.store.one(
            "SELECT id, payload FROM visit_outcomes WHERE visit_key = ? ORDER BY id DESC LIMIT 1",
            (key,),
        )
        payload = json.loads(outcome["payload"]) if outcome else {}
        pdf = self.store.one(
            "SELECT id FROM derived_objects WHERE kind = 'pdf' AND visit_key = ? "
            "AND purged_at IS NULL ORDER BY id DESC LIMIT 1",
            (key,),
        )
        return VisitLine(
            visit_key=key,
            patient_id=row["patient_id"],
            issuer=row["issuer"],
            patient_name=row["patient_name"],
            birth_date=row["birth_date"],
            first_received=row["first_received"],
            photos=int(row["photos"]),
            outcome_code=str(payload.get("code", "")),
            outcome_text=str(payload.get("text", "")),
            signed=signed_line(self.store, outcome["id"]) if outcome else "",
            report_id=int(pdf["id"]) if pdf else None,
        )

    def of_patient(
        self, patient_id: str, issuer: str, *, leave_out: tuple[str, ...] = ()
    ) -> tuple[VisitLine, ...]:
        """The patient's visits, newest first, without ``leave_out`` (the visit shown live)."""
        lines = self._lines(
            "p.patient_id = ? AND p.issuer = ?", (patient_id, issuer), HISTORY_LIMIT + 10
        )
        return tuple(line for line in lines if line.visit_key not in leave_out)[:HISTORY_LIMIT]

    def finished_today(self, station: str, today: date) -> tuple[VisitLine, ...]:
        """The visits of the patients whose visit was finished at this station today."""
        since = datetime.combine(today - timedelta(days=1), datetime.min.time()).isoformat()
        rows = self.store.query(
            "SELECT study_instance_uid, cleared_at FROM station_selections "
            "WHERE station = ? AND cleared_at >= ? ORDER BY cleared_at DESC LIMIT ?",
            (station, since, SEARCH_LIMIT),
        )
        uids = [
            r["study_instance_uid"]
            for r in rows
            if datetime.fromisoformat(r["cleared_at"]).astimezone().date() == today
        ]
        if not uids:
            return ()
        marks = ", ".join("?" for _ in uids)
        where = f"c.study_pk IN (SELECT id FROM studies WHERE study_instance_uid IN ({marks}))"
        return tuple(self._lines(where, tuple(uids), SEARCH_LIMIT))

    def search(self, query: str, *, user: str, address: str = "") -> SearchResult:
        """Visits of patients whose ID starts with the query, or whose name holds every word
        of it (case-insensitive); audited as a query with the patients found."""
        terms = search_terms(query)
        text = " ".join(terms)
        # Unicode case folding (SQLite's own LIKE and lower() fold ASCII only), and no pattern
        # language at all: the words are compared as they are, as parameters.
        self.store.reader().conn.create_function("casefold", 1, _casefold, deterministic=True)
        by_name = " AND ".join("instr(casefold(p.patient_name), ?) > 0" for _ in terms)
        where = f"(substr(casefold(p.patient_id), 1, ?) = ? OR ({by_name}))"
        folded = text.casefold()
        params = (len(folded), folded, *(t.casefold() for t in terms))
        lines = self._lines(where, params, SEARCH_LIMIT + 1)
        found = tuple(lines[:SEARCH_LIMIT])
        patients = sorted({line.patient_id for line in found})
        self.audit.log(
            events.patient_query(
                events.Who(user, address, self.station_ae),
                {"query": text, "matches": len(found), "patients": patients},
            )
        )
        return SearchResult(query=text, visits=found, more=len(lines) > SEARCH_LIMIT)

    # -- one visit, read-only ----------------------------------------------------------------
    def visit(self, visit_key: str) -> PastVisit:
        try:
            found = scope(visit_key)
        except VisitNotFound:
            raise NotFound("There is no such visit.") from None
        rows = self.store.query(
            "SELECT c.id, c.source, c.status, c.status_reason, c.received_at, c.laterality, "
            "c.sop_instance_uid, c.study_pk, c.patient_pk, c.purged_at, s.study_instance_uid, "
            "(SELECT r.payload FROM results r WHERE r.capture_pk = c.id AND r.kind = 'screening' "
            " ORDER BY r.id DESC LIMIT 1) AS payload "
            "FROM captures c LEFT JOIN studies s ON s.id = c.study_pk "
            f"WHERE c.patient_pk IS NOT NULL AND {found.where} ORDER BY c.id",
            found.params,
        )
        lines = self._lines(found.where, found.params, 1)
        if not rows or not lines:
            raise NotFound("There is no such visit.")
        study_uid = next((r["study_instance_uid"] for r in rows if r["study_instance_uid"]), "")
        decided = eyes.of_captures(self.store, [row["id"] for row in rows])
        outcome_row = self.store.one(
            "SELECT id, payload FROM visit_outcomes WHERE visit_key = ? ORDER BY id DESC LIMIT 1",
            (visit_key,),
        )
        outcome = json.loads(outcome_row["payload"]) if outcome_row else None
        views = tuple(
            replace(
                capture_view(n, row, study_uid, decided.get(row["id"]), outcome),
                other_study=False,
                purged=row["purged_at"] is not None,
            )
            for n, row in enumerate(rows, 1)
        )
        captures = mark_superseded(views, outcome)
        newest = self.store.one(
            "SELECT id, purged_at FROM derived_objects WHERE kind = 'pdf' AND visit_key = ? "
            "ORDER BY id DESC LIMIT 1",
            (visit_key,),
        )
        held = newest is not None and newest["purged_at"] is None
        return PastVisit(
            line=lines[0],
            study_instance_uid=study_uid,
            captures=captures,
            eyes=checklist(captures, outcome),
            outcome=outcome,
            report_id=int(newest["id"]) if held and newest else None,
            report_purged=newest is not None and not held,
            signed=signed_line(self.store, outcome_row["id"]) if outcome_row else "",
        )

    def thumbnail(self, visit_key: str, capture_id: int) -> tuple[PastVisit, bytes]:
        """A photograph of that visit (else "not found"), with the visit it belongs to."""
        shown = self.visit(visit_key)
        capture = next((c for c in shown.captures if c.id == capture_id), None)
        if capture is None or capture.purged:
            raise NotFound("That photograph is not held for this visit.")
        return shown, thumbnail(self.store, self.blobs, self.limits, capture_id)

    def report(self, visit_key: str) -> tuple[PastVisit, Report]:
        """The visit's current report: its newest PDF (the signed one once signed)."""
        shown = self.visit(visit_key)
        if shown.report_id is None:
            raise NotFound("This visit has no report to print.")
        return shown, report(self.store, self.blobs, shown.report_id, (visit_key,))
