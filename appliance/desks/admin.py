"""What the admin console asks of the core: outbox, result documents not built, C-ECHO checks,
audit log search, models.

The web layer calls these and never writes SQL itself. Actions an admin takes here are audited
with the admin's user name, the same way the command line audits them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from typing import Any, Protocol, TextIO

from appliance.audit import AuditTrail, VerifyResult, events, export_jsonl, words
from appliance.audit.codes import NAMES
from appliance.config import Settings
from appliance.dicom.worklist import Node, NodeUnreachable, echo
from appliance.inference.card import ModelIntegrityError, find_cards
from appliance.outbox import commitment, queue
from appliance.pipeline import cameras, due
from appliance.store import Store
from appliance.tls import TlsClient, worklist_tls

LOGGER = logging.getLogger(__name__)
STATES = ("queued", "leased", "delivered", "dead")
OUTCOME_WORDS = {0: "success", 4: "minor failure", 8: "serious failure", 12: "major failure"}
ACTION_WORDS = {"C": "create", "R": "read", "U": "update", "D": "delete", "E": "execute"}


# -- outbox ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DestinationState:
    name: str
    kind: str
    address: str
    configured: bool
    counts: dict[str, int]
    oldest_waiting: str | None
    commitment: dict[str, int] | None = None  # destinations with storage_commitment on


def outbox_overview(store: Store, settings: Settings) -> list[DestinationState]:
    """Per destination (configured ones first, then any left in the queue): jobs per state."""
    summary = queue.status(store)
    committed = commitment.summary(store)
    zero = {"committed": 0, "awaiting_commitment": 0, "not_committed": 0}
    out = []
    for d in settings.destinations:
        address = d.url if d.kind == "stow" else f"{d.ae_title}@{d.host}:{d.port}"
        state = _state(d.name, d.kind, address, True, summary.pop(d.name, {}))
        if d.storage_commitment:
            state = replace(state, commitment=committed.get(d.name, zero))
        out.append(state)
    for name, states in sorted(summary.items()):
        out.append(_state(name, "?", "no longer configured", False, states))
    return out


def _state(
    name: str, kind: str, address: str, configured: bool, states: dict[str, Any]
) -> DestinationState:
    waiting = [states[s]["oldest"] for s in ("queued", "leased") if s in states]
    return DestinationState(
        name=name,
        kind=kind,
        address=address,
        configured=configured,
        counts={s: int(states.get(s, {}).get("count", 0)) for s in STATES},
        oldest_waiting=min(waiting) if waiting else None,
    )


def dead_letters(store: Store, limit: int = 200) -> list[dict[str, Any]]:
    return store.query(
        "SELECT id, kind, destination, sop_instance_uid, study_instance_uid, attempts, "
        "last_status, last_error, updated_at FROM outbox_jobs WHERE state = 'dead' "
        "ORDER BY destination, id LIMIT ?",
        (limit,),
    )


def retry_dead(
    store: Store, audit: AuditTrail, destination: str | None, *, user: str, address: str = ""
) -> int:
    """Queue dead letters again (all, or one destination's), audited like ``outbox retry``."""
    count = queue.requeue_dead(store, destination or None)
    audit.log(
        events.dead_letters_requeued(
            events.Who(user, address), count=count, destination=destination
        )
    )
    return count


# -- result documents that could not be built ------------------------------------------------
def dead_documents(store: Store, limit: int = 200) -> list[dict[str, Any]]:
    """SR / PDF / SC documents dead-lettered after every try, with their reasons."""
    return due.dead_letters(store, limit)


def retry_documents(
    store: Store, audit: AuditTrail, document: int | None, *, user: str, address: str = ""
) -> int:
    """Make dead-lettered documents (all, or one) due again, audited like ``documents retry``."""
    return due.retry_dead(store, audit, document, user=user, address=address)


# -- C-ECHO ------------------------------------------------------------------------------------
def echo_nodes(settings: Settings) -> dict[str, Node]:
    """The nodes a C-ECHO can test: DIMSE destinations and the worklist (as ``appliance echo``)."""
    nodes = {
        d.name: Node(
            d.host,
            d.port,
            d.ae_title,
            settings.dicom_ae_title,
            d.timeout,
            tls=TlsClient(d.tls_ca, d.tls_cert, d.tls_key) if d.tls else None,
        )
        for d in settings.destinations
        if d.kind == "dimse"
    }
    if settings.worklist_host:
        nodes["worklist"] = Node(
            settings.worklist_host,
            settings.worklist_port,
            settings.worklist_ae_title,
            settings.dicom_ae_title,
            tls=worklist_tls(settings),
        )
    return nodes


@dataclass(frozen=True)
class EchoResult:
    name: str
    ok: bool
    words: str


def echo_test(
    settings: Settings, audit: AuditTrail, name: str, *, user: str, address: str = ""
) -> EchoResult:
    """C-ECHO one configured node; the answer in words, and an audit event either way."""
    nodes = echo_nodes(settings)
    node = nodes.get(name)
    if node is None:
        known = ", ".join(nodes) or "none"
        return EchoResult(name, False, f"{name!r} is not a configured node (configured: {known})")
    target = f"{node.ae_title} at {node.host}:{node.port}"
    try:
        status = echo(node)
    except NodeUnreachable as exc:
        result = EchoResult(name, False, f"C-ECHO to {name} failed: {exc.message}")
    else:
        result = (
            EchoResult(name, True, f"C-ECHO to {name} ({target}) succeeded (status 0x0000)")
            if status == 0
            else EchoResult(name, False, f"{name} ({target}) answered status 0x{status:04X}")
        )
    audit.log(
        events.c_echo(
            events.Who(user, address, node.ae_title), node=name, ok=result.ok, words=result.words
        )
    )
    return result


# -- audit log search --------------------------------------------------------------------------
@dataclass(frozen=True)
class AuditFilter:
    user: str = ""
    patient_id: str = ""
    event_id: str = ""
    date_from: str = ""  # YYYY-MM-DD, inclusive (UTC)
    date_to: str = ""  # YYYY-MM-DD, inclusive (UTC)

    def problems(self) -> list[str]:
        out = []
        for label, value in (("from", self.date_from), ("to", self.date_to)):
            if value:
                try:
                    date.fromisoformat(value)
                except ValueError:
                    out.append(f"the '{label}' date must look like 2026-11-29, not {value!r}")
        if self.event_id and self.event_id not in NAMES:
            out.append(f"{self.event_id!r} is not an audit event ID")
        return out

    def active(self) -> dict[str, str]:
        return {k: v for k, v in self.__dict__.items() if v}


@dataclass(frozen=True)
class AuditPage:
    rows: list[dict[str, Any]]
    total: int
    page: int
    per_page: int
    problems: list[str] = field(default_factory=list)

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))


def _where(f: AuditFilter) -> tuple[str, list[Any]]:
    clauses, params = [], []
    if f.user:
        clauses.append("user_id LIKE ? ESCAPE '\\'")
        params.append("%" + _like(f.user) + "%")
    if f.patient_id:
        clauses.append("patient_id = ?")
        params.append(f.patient_id)
    if f.event_id:
        clauses.append("(event_id = ? OR event_type = ?)")
        params += [f.event_id, f.event_id]
    if f.date_from:
        clauses.append("event_time >= ?")
        params.append(date.fromisoformat(f.date_from).isoformat())
    if f.date_to and date.fromisoformat(f.date_to) < date.max:  # 9999-12-31: no end at all
        clauses.append("event_time < ?")
        params.append((date.fromisoformat(f.date_to) + timedelta(days=1)).isoformat())
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def search_audit(store: Store, f: AuditFilter, page: int = 1, per_page: int = 50) -> AuditPage:
    """Audit events matching ``f``, newest first, one page at a time."""
    problems = f.problems()
    if problems:
        return AuditPage([], 0, 1, per_page, problems)
    where, params = _where(f)
    total = int(store.scalar(f"SELECT count(*) FROM audit_events{where}", tuple(params)) or 0)
    page = min(max(page, 1), max(1, -(-total // per_page)))
    rows = store.query(
        "SELECT seq, event_time, event_id, event_type, action, outcome, user_id, ae_title, "
        f"source_address, patient_id, study_instance_uid, detail FROM audit_events{where} "
        "ORDER BY seq DESC LIMIT ? OFFSET ?",
        (*params, per_page, (page - 1) * per_page),
    )
    names = patient_names(store, {row["patient_id"] for row in rows if row["patient_id"]})
    for row in rows:
        said = words.sentence(row, names)
        row["words"], row["kind"] = said.text, said.kind
        row["event_name"] = NAMES.get(row["event_id"], "")
        row["type_name"] = NAMES.get(row["event_type"], row["event_type"])
        row["outcome_words"] = OUTCOME_WORDS.get(row["outcome"], str(row["outcome"]))
        row["action_words"] = ACTION_WORDS.get(row["action"], row["action"])
    return AuditPage(rows, total, page, per_page)


def patient_names(store: Store, patient_ids: set[str]) -> dict[str, str]:
    """Patient ID → the name held for it (the audit page's sentences name the patient)."""
    if not patient_ids:
        return {}
    marks = ", ".join("?" * len(patient_ids))
    rows = store.query(
        f"SELECT patient_id, patient_name FROM patients WHERE patient_id IN ({marks}) ORDER BY id",
        tuple(sorted(patient_ids)),
    )
    return {row["patient_id"]: row["patient_name"] for row in rows if row["patient_name"]}


def event_choices() -> list[tuple[str, str]]:
    return sorted(NAMES.items())


# -- models ------------------------------------------------------------------------------------
def _figure(value: Any) -> dict[str, Any] | None:
    if not isinstance(value, dict) or "value" not in value:
        return None
    out = {"value": value["value"], "ci_low": value.get("ci_low"), "ci_high": value.get("ci_high")}
    if "numerator" in value:
        out["of"] = f"{value['numerator']}/{value['denominator']}"
    elif "n_positive" in value:
        out["of"] = f"{value['n_positive']} positive, {value['n_negative']} negative"
    return out


# A card's validation block covers the whole run; each model page shows its own task's figures.
TASK_FIGURES = {
    "dr": ("referable_dr", "dme", "dr_grade"),
    "glaucoma": ("glaucoma",),
    "gradability": ("gradability", "imageability"),
}


def _figures(task: str, validation: dict[str, Any]) -> list[dict[str, Any]]:
    found = [
        {"name": key.replace("_", " "), **figure}
        for key, value in validation.items()
        if (figure := _figure(value)) is not None
    ]
    prefixes = TASK_FIGURES.get(task, ())
    mine = [f for f in found if f["name"].replace(" ", "_").startswith(prefixes)]
    return mine or found


def model_cards(settings: Settings, loaded: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every card in the models folder, what it says, and how it is in use (if it is)."""
    try:
        cards = find_cards(settings.models_path)
    except ModelIntegrityError as exc:
        return [{"error": exc.message}]
    in_use = {m["task"]: m for m in loaded}
    out = []
    for card in cards:
        data = card.data
        use = in_use.get(card.task)
        if use is not None and use.get("name") != card.name:
            use = None
        validation = dict(data.get("validation") or {})
        out.append(
            {
                "name": card.name,
                "version": card.version,
                "task": card.task,
                "file": card.path.name,
                "disclaimer": data.get("disclaimer", ""),
                "demonstration": card.demonstration,
                "intended_use": data.get("intended_use", ""),
                "limitations": list(data.get("limitations") or []),
                "files": [
                    {
                        "variant": v,
                        "path": f.get("path", ""),
                        "sha256": f.get("sha256", ""),
                        "bytes": f.get("bytes"),
                    }
                    for v, f in data["files"].items()
                ],
                "thresholds": [
                    {"name": k, "value": t.get("value"), "chosen_at": t.get("chosen_at", "")}
                    for k, t in data["thresholds"].items()
                ],
                "in_use": use,
                "validation_dataset": validation.pop("dataset", ""),
                "validation_n": validation.pop("n", None),
                "validation_report": validation.pop("report", ""),
                "figures": _figures(card.task, validation),
                "int8_fp32_agreement": data.get("int8_fp32_agreement"),
                "training": data.get("training") or {},
            }
        )
    return out


# -- the desk ----------------------------------------------------------------------------------
class Wakeable(Protocol):
    """A background loop told that there is work (the forwarder)."""

    def notify(self) -> None: ...


class AdminDesk:
    """What the admin console asks of the core, built once with the services: the views call
    these and never touch the store, the audit trail or a worker themselves."""

    def __init__(
        self,
        store: Store,
        audit: AuditTrail,
        settings: Settings,
        *,
        forwarder: Wakeable,
        build_documents: Callable[[], None],
        loaded_models: Callable[[], list[dict[str, Any]]],
    ) -> None:
        self.store = store
        self.audit = audit
        self.settings = settings
        self.forwarder = forwarder
        self.build_documents = build_documents  # wakes the pipeline, which builds what is due
        self.loaded_models = loaded_models

    # outbox and result documents
    def outbox_overview(self) -> list[DestinationState]:
        return outbox_overview(self.store, self.settings)

    def dead_letters(self) -> list[dict[str, Any]]:
        return dead_letters(self.store)

    def dead_documents(self) -> list[dict[str, Any]]:
        return dead_documents(self.store)

    def retry_dead(self, destination: str | None, *, user: str, address: str = "") -> int:
        """Dead letters queued again (audited); the forwarder tries them at once."""
        count = retry_dead(self.store, self.audit, destination, user=user, address=address)
        self.forwarder.notify()
        return count

    def retry_documents(self, document: int | None, *, user: str, address: str = "") -> int:
        """Dead-lettered documents due again (audited); the pipeline builds them at once."""
        count = retry_documents(self.store, self.audit, document, user=user, address=address)
        self.build_documents()
        return count

    # C-ECHO
    def echo_nodes(self) -> dict[str, Node]:
        return echo_nodes(self.settings)

    def echo_test(self, name: str, *, user: str, address: str = "") -> EchoResult:
        return echo_test(self.settings, self.audit, name, user=user, address=address)

    # the audit log
    def search_audit(self, f: AuditFilter, page: int = 1, per_page: int = 50) -> AuditPage:
        return search_audit(self.store, f, page, per_page)

    def verify_audit(self) -> VerifyResult:
        return self.audit.verify()

    def export_audit(self, out: TextIO) -> None:
        export_jsonl(self.audit, out)

    # models and cameras
    def model_cards(self) -> list[dict[str, Any]]:
        return model_cards(self.settings, self.loaded_models())

    def cameras(self) -> list[dict[str, Any]]:
        return cameras.cameras(self.store)
