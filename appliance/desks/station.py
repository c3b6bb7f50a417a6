"""The camera station's core: today's worklist, the patient chosen at the station, its visit.

``web/station.py`` renders what this module returns and holds no SQL and no DICOM:

* **Worklist.** Today's Modality Worklist for this station (C-FIND filtered by the appliance's
  AE title and today's date), every query audited as a Query (110112), success or not.
* **Selection.** The station's current patient (``station_selections``: at most one open row
  per station; choosing another patient or finishing the visit closes it), chosen from the
  worklist or registered as a walk-in with the same rules as sidecar identity. Every selection
  carries a Study Instance UID — the worklist step's, or one made here for a walk-in — so the
  photographs taken for it (uploads carrying its identity, hot-folder files given the selection)
  form one study, one visit, and their OP objects carry the step's Accession Number and
  Request Attributes.
* **Visit.** What the station shows of the selection's visit (``appliance/desks/station_view.py``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import date, datetime
from typing import Any

from appliance.audit import Action, AuditTrail, Outcome, events
from appliance.capture.decode import Limits
from appliance.capture.ingest import Identity, identity_from_fields
from appliance.config import Settings
from appliance.desks.station_history import History
from appliance.desks.station_view import (
    NotFound,
    Report,
    Selection,
    StationVisit,
    capture_identity,
    read_visit,
    report,
    thumbnail,
)
from appliance.dicom.op import new_uid
from appliance.dicom.worklist import Node, NodeUnreachable, WorklistItem, query_worklist
from appliance.errors import RejectedInput
from appliance.store import BlobStore, Store, utcnow
from appliance.tls import worklist_tls

LOGGER = logging.getLogger(__name__)
WORKLIST_TIMEOUT = 5.0  # seconds: the page waits no longer than this for the RIS
ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")  # what the walk-in form's date field takes
EARLIEST_BIRTH_YEAR = 1900


@dataclass(frozen=True)
class WorklistEntry:
    key: str  # what the page's "Choose" button sends back
    item: WorklistItem


@dataclass(frozen=True)
class Worklist:
    configured: bool
    entries: tuple[WorklistEntry, ...] = ()
    error: str = ""  # why the node could not be asked, in plain words
    date: str = ""


class Station:
    def __init__(
        self,
        store: Store,
        blobs: BlobStore,
        audit: AuditTrail,
        limits: Limits,
        *,
        station: str,
        station_ae: str,
        worklist: Node | None,
        uid_root: str = "2.25.",
        today: Callable[[], date] = date.today,
    ) -> None:
        self.store = store
        self.blobs = blobs
        self.audit = audit
        self.limits = limits
        self.station = station
        self.station_ae = station_ae
        self.node = worklist
        self.uid_root = uid_root
        self.today = today
        self._offered: dict[str, WorklistItem] = {}  # the last worklist shown, by key
        self.history = History(store, blobs, audit, limits, station_ae)
        self._lock = threading.Lock()

    @classmethod
    def build(
        cls, settings: Settings, store: Store, blobs: BlobStore, audit: AuditTrail, limits: Limits
    ) -> Station:
        node = None
        if settings.worklist_host:
            node = Node(
                settings.worklist_host,
                settings.worklist_port,
                settings.worklist_ae_title,
                settings.dicom_ae_title,
                WORKLIST_TIMEOUT,
                tls=worklist_tls(settings),
            )
        return cls(
            store,
            blobs,
            audit,
            limits,
            station=settings.station_name,
            station_ae=settings.dicom_ae_title,
            worklist=node,
            uid_root=settings.uid_root,
        )

    # -- worklist ----------------------------------------------------------------------------
    def worklist(self, *, user: str, address: str = "") -> Worklist:
        """Today's scheduled steps for this station; never raises for network trouble."""
        if self.node is None:
            return Worklist(configured=False)
        day = self.today().strftime("%Y%m%d")
        node = f"{self.node.ae_title}@{self.node.host}:{self.node.port}"
        detail: dict[str, Any] = {
            "query": "modality_worklist",
            "node": node,
            "station_ae": self.station_ae,
            "date": day,
        }
        try:
            items = query_worklist(self.node, station_ae=self.station_ae, date=day)
        except NodeUnreachable as exc:
            error = exc.message
        except Exception as exc:  # a malformed answer must not take the page down
            LOGGER.exception("worklist query failed")
            error = f"the worklist answered something unexpected ({type(exc).__name__})"
        else:
            entries = tuple(
                WorklistEntry(_key(item), item)
                for item in sorted(items, key=lambda i: (i.start_time, i.patient_name))
            )
            with self._lock:
                self._offered = {entry.key: entry.item for entry in entries}
            self._audit_query(user, address, {**detail, "matches": len(entries)}, Outcome.SUCCESS)
            return Worklist(configured=True, entries=entries, date=day)
        self._audit_query(user, address, {**detail, "error": error}, Outcome.SERIOUS_FAILURE)
        return Worklist(configured=True, error=error, date=day)

    def _audit_query(
        self, user: str, address: str, detail: dict[str, Any], outcome: Outcome
    ) -> None:
        self.audit.log(
            events.worklist_query(events.Who(user, address, self.station_ae), detail, outcome)
        )

    def choose(self, key: str, *, user: str, user_pk: int | None, address: str = "") -> Selection:
        """Make the worklist entry ``key`` (from the last worklist shown) the current patient."""
        with self._lock:
            item = self._offered.get(key)
        if item is None:  # e.g. after a restart: ask the worklist again
            self.worklist(user=user, address=address)
            with self._lock:
                item = self._offered.get(key)
        if item is None:
            raise RejectedInput(
                "That patient is no longer on today's worklist. Reload the page and choose again.",
                reason="not_on_worklist",
            )
        try:
            identity = identity_from_fields(
                {
                    "patient_id": item.patient_id,
                    "issuer": item.issuer,
                    "patient_name": item.patient_name,
                    "birth_date": item.birth_date,
                    "sex": item.sex,
                    "accession_number": item.accession_number,
                    "study_instance_uid": item.study_instance_uid or new_uid(self.uid_root),
                }
            )
        except RejectedInput as exc:
            raise RejectedInput(
                f"This worklist entry cannot be used ({exc.message}). Register the patient as a "
                "walk-in, and ask the administrator to check the worklist.",
                reason="bad_worklist_entry",
            ) from None
        return self._select(identity, "worklist", _requests(item), user, user_pk, address)

    # -- walk-in -----------------------------------------------------------------------------
    def walk_in(
        self, form: Mapping[str, str], *, user: str, user_pk: int | None, address: str = ""
    ) -> Selection:
        """Register a patient who is not on the worklist; the form's words are checked here."""
        patient_id = (form.get("patient_id") or "").strip()
        family = (form.get("family_name") or "").strip()
        given = (form.get("given_name") or "").strip()
        born = (form.get("birth_date") or "").strip()
        if not patient_id:
            raise RejectedInput("Enter the patient's ID.", reason="walk_in_incomplete")
        if not family:
            raise RejectedInput("Enter the patient's family name.", reason="walk_in_incomplete")
        if not born:
            raise RejectedInput("Enter the patient's birth date.", reason="walk_in_incomplete")
        if any(ch in family + given for ch in "^=\\"):
            raise RejectedInput("Names must not contain ^, = or \\.", reason="bad_sidecar")
        born = self._birth_date(born)
        fields = {
            "patient_id": patient_id,
            "patient_name": f"{family}^{given}" if given else family,
            "birth_date": born,
            "sex": (form.get("sex") or "").strip(),
            "study_instance_uid": new_uid(self.uid_root),
        }
        identity = identity_from_fields(fields)  # the same rules as a sidecar's identity
        assert identity.patient is not None
        known = self.store.one(
            "SELECT patient_name, birth_date FROM patients WHERE patient_id = ? AND issuer = ''",
            (patient_id,),
        )
        if known is not None and (
            known["patient_name"].casefold() != identity.patient.patient_name.casefold()
            or (known["birth_date"] and known["birth_date"] != born)
        ):
            raise RejectedInput(
                f"Patient ID {patient_id} is already registered with a different name or birth "
                "date. Check the ID, or choose the patient from the worklist.",
                reason="identity_conflict",
            )
        return self._select(identity, "walk-in", (), user, user_pk, address)

    def _birth_date(self, text: str) -> str:
        """A birth date typed as YYYY-MM-DD (whatever the browser's locale) → DICOM DA. The
        messages never repeat what was typed (a birth date is PHI; the form keeps it)."""
        if not ISO_DATE.fullmatch(text):
            raise RejectedInput(
                "Enter the birth date as YYYY-MM-DD (year, month, day), e.g. 1958-04-12.",
                reason="bad_sidecar",
            )
        try:
            birth = date.fromisoformat(text)
        except ValueError:
            raise RejectedInput(
                "The birth date is not a real date (YYYY-MM-DD).", reason="bad_sidecar"
            ) from None
        if birth > self.today():
            raise RejectedInput("The birth date is in the future.", reason="bad_sidecar")
        if birth.year < EARLIEST_BIRTH_YEAR:
            raise RejectedInput(
                f"The birth date is before {EARLIEST_BIRTH_YEAR}: check the year.",
                reason="bad_sidecar",
            )
        return birth.strftime("%Y%m%d")

    def returning(
        self, visit_key: str, *, user: str, user_pk: int | None, address: str = ""
    ) -> Selection:
        """Choose the patient of an earlier visit (found by search) for a new visit, with the
        identity held for them; only while no patient is chosen here."""
        if self.current() is not None:
            raise RejectedInput(
                "Another patient is chosen at this station. Finish that visit first.",
                reason="station_busy",
            )
        line = self.history.visit(visit_key).line
        row = self.store.one(
            "SELECT sex FROM patients WHERE patient_id = ? AND issuer = ?",
            (line.patient_id, line.issuer),
        )
        fields = {
            "patient_id": line.patient_id,
            "issuer": line.issuer,
            "patient_name": line.patient_name,
            "birth_date": line.birth_date,
            "sex": row["sex"] if row else "",
            "study_instance_uid": new_uid(self.uid_root),
        }
        return self._select(identity_from_fields(fields), "walk-in", (), user, user_pk, address)

    # -- the current selection ---------------------------------------------------------------
    def _select(
        self,
        identity: Identity,
        source: str,
        requests: tuple[dict[str, str], ...],
        user: str,
        user_pk: int | None,
        address: str,
    ) -> Selection:
        patient = identity.patient
        assert patient is not None
        now = utcnow()
        with self.store.write() as tx:
            tx.execute(
                "UPDATE station_selections SET cleared_at = ? "
                "WHERE station = ? AND cleared_at IS NULL",
                (now, self.station),
            )
            selection_id = tx.insert(
                "station_selections",
                {
                    "station": self.station,
                    "user_pk": user_pk,
                    **asdict(patient),
                    "accession_number": identity.accession_number,
                    "study_instance_uid": identity.study_instance_uid,
                    "request_json": json.dumps(list(requests)),
                    "source": source,
                    "selected_at": now,
                },
            )
            self.audit.record(
                tx,
                events.station_selection(
                    Action.CREATE,
                    events.Who(user, address),
                    events.About(patient.patient_id, identity.study_instance_uid),
                    {
                        "station_selection": selection_id,
                        "source": source,
                        "station": self.station,
                        "accession_number": identity.accession_number,
                    },
                ),
            )
        current = self.current()
        assert current is not None
        return current

    def current(self) -> Selection | None:
        row = self.store.one(
            "SELECT * FROM station_selections WHERE station = ? AND cleared_at IS NULL "
            "ORDER BY id DESC LIMIT 1",
            (self.station,),
        )
        if row is None:
            return None
        try:
            requests = tuple(dict(r) for r in json.loads(row["request_json"] or "[]"))
        except (ValueError, TypeError):
            requests = ()
        return Selection(
            id=int(row["id"]),
            source=row["source"],
            patient_id=row["patient_id"],
            issuer=row["issuer"],
            patient_name=row["patient_name"],
            birth_date=row["birth_date"],
            sex=row["sex"],
            accession_number=row["accession_number"],
            study_instance_uid=row["study_instance_uid"],
            request_attributes=requests,
            selected_at=row["selected_at"],
        )

    def finish(self, *, user: str, address: str = "") -> Selection | None:
        """Close the current selection ("next patient"); returns what was closed."""
        current = self.current()
        if current is None:
            return None
        with self.store.write() as tx:
            tx.execute(
                "UPDATE station_selections SET cleared_at = ? WHERE id = ? AND cleared_at IS NULL",
                (utcnow(), current.id),
            )
            self.audit.record(
                tx,
                events.station_selection(
                    Action.UPDATE,
                    events.Who(user, address),
                    events.About(current.patient_id, current.study_instance_uid),
                    {
                        "station_selection": current.id,
                        "finished": True,
                        "station": self.station,
                    },
                ),
            )
        return current

    def hotfolder_identity(self) -> dict[str, str] | None:
        """Identity for a hot-folder file that has none: today's open selection, else None.

        A selection left open from an earlier day is not used: a forgotten patient must never
        be given tomorrow's photographs.
        """
        current = self.current()
        if current is None or _local_day(current.selected_at) != self.today():
            return None
        return current.fields()

    # -- the visit (desks/station_view.py) ----------------------------------------------
    # The station shows one patient: the current selection. A photograph or report is served
    # only when it belongs to that selection's visit; any other id (another patient's, an
    # earlier patient's after "next patient") is "not found", so ids cannot be walked.
    def visit(self, selection: Selection) -> StationVisit:
        return read_visit(self.store, selection)

    def _current_visit(self) -> StationVisit:
        selection = self.current()
        if selection is None:
            raise NotFound("No patient is chosen at this station.")
        return self.visit(selection)

    def _shown_capture(self, capture_id: int) -> None:
        if capture_id not in {c.id for c in self._current_visit().captures}:
            raise NotFound("That photograph is not part of the visit chosen at this station.")

    def capture_identity(self, capture_id: int) -> dict[str, str]:
        self._shown_capture(capture_id)
        return capture_identity(self.store, capture_id)

    def thumbnail(self, capture_id: int) -> bytes:
        self._shown_capture(capture_id)
        return thumbnail(self.store, self.blobs, self.limits, capture_id)

    def report(self, document_id: int) -> Report:
        keys = self._current_visit().visit_keys
        return report(self.store, self.blobs, document_id, visit_keys=keys)


def _key(item: WorklistItem) -> str:
    parts = (
        item.patient_id,
        item.issuer,
        item.accession_number,
        item.study_instance_uid,
        item.requested_procedure_id,
        item.step_id,
        item.start_date,
        item.start_time,
    )
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:20]


def _requests(item: WorklistItem) -> tuple[dict[str, str], ...]:
    """The step's Request Attributes: as the worklist sent them, else built from the step."""
    given = item.request_attributes or [
        {
            "RequestedProcedureID": item.requested_procedure_id,
            "ScheduledProcedureStepID": item.step_id,
            "AccessionNumber": item.accession_number,
        }
    ]
    out = []
    for request in given:
        request = {k: v for k, v in request.items() if v}
        if item.description and request.get("ScheduledProcedureStepID") == item.step_id:
            request.setdefault("ScheduledProcedureStepDescription", item.description)
        if request:
            out.append(request)
    return tuple(out)


def _local_day(stamp: str) -> date:
    return datetime.fromisoformat(stamp).astimezone().date()
