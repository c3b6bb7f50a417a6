"""Append-only, hash-chained audit events (HIPAA §164.312(b)).

Each event's ``hash`` is SHA-256 over a canonical JSON encoding of all its fields, including
``seq`` and the previous event's hash, so changing, deleting, reordering or inserting an event
breaks the chain at that entry. The chain head (last seq and hash) is also written to
``<data_dir>/audit.head`` after each commit, so cutting events off the end is detected too.
The table has triggers that refuse UPDATE and DELETE; this module only ever inserts.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from appliance.audit.codes import NAMES, Action, EventID, Outcome
from appliance.store import Store, Tx, utcnow
from appliance.store.blobs import write_atomic

GENESIS = "0" * 64
FIELDS = (
    "seq",
    "event_time",
    "event_id",
    "event_type",
    "action",
    "outcome",
    "user_id",
    "ae_title",
    "source_address",
    "patient_id",
    "study_instance_uid",
    "sop_instance_uids",
    "detail",
    "prev_hash",
)


@dataclass(frozen=True)
class AuditEvent:
    event_id: EventID
    action: Action
    user_id: str  # a person's user name, "system", or "ae:<AE title>" for a DICOM peer
    outcome: Outcome = Outcome.SUCCESS
    event_type: str = ""
    ae_title: str = ""
    source_address: str = ""
    patient_id: str = ""
    study_instance_uid: str = ""
    sop_instance_uids: Sequence[str] = ()
    detail: dict[str, Any] = field(default_factory=dict)


def canonical(row: dict[str, Any]) -> bytes:
    return json.dumps(
        {name: row[name] for name in FIELDS},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode("utf-8")


def entry_hash(row: dict[str, Any]) -> str:
    return hashlib.sha256(canonical(row)).hexdigest()


class AuditTrail:
    def __init__(self, store: Store, head_path: Path) -> None:
        self.store = store
        self.head_path = head_path

    def record(self, tx: Tx, event: AuditEvent) -> int:
        """Append ``event`` inside the caller's transaction; returns its sequence number."""
        last = tx.one("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")
        seq = (last["seq"] + 1) if last else 1
        row: dict[str, Any] = {
            "seq": seq,
            "event_time": utcnow(),
            "event_id": str(event.event_id),
            "event_type": event.event_type,
            "action": str(event.action),
            "outcome": int(event.outcome),
            "user_id": event.user_id,
            "ae_title": event.ae_title,
            "source_address": event.source_address,
            "patient_id": event.patient_id,
            "study_instance_uid": event.study_instance_uid,
            "sop_instance_uids": json.dumps(list(event.sop_instance_uids)),
            "detail": json.dumps(event.detail, sort_keys=True, default=str),
            "prev_hash": last["hash"] if last else GENESIS,
        }
        row["hash"] = entry_hash(row)
        tx.insert("audit_events", row)
        # The head file is written once per transaction, for its last event.
        if "audit_head" not in tx.memo:
            tx.after_commit(lambda: self._write_head(*tx.memo["audit_head"]))
        tx.memo["audit_head"] = (seq, row["hash"])
        return seq

    def log(self, event: AuditEvent) -> int:
        """Record an event that goes with no other change."""
        with self.store.write() as tx:
            return self.record(tx, event)

    def _write_head(self, seq: int, digest: str) -> None:
        current = self.read_head()
        if current is not None and current[0] >= seq:
            return
        # Not fsynced: after a power cut the head may lag the chain, which verify accepts;
        # it exists to catch entries cut off the end, not to be a durable record itself.
        write_atomic(self.head_path, f"{seq} {digest}\n".encode(), durable=False)

    def read_head(self) -> tuple[int, str] | None:
        try:
            seq, digest = self.head_path.read_text().split()
            return int(seq), digest
        except (FileNotFoundError, ValueError):
            return None

    def rows(self) -> Iterator[dict[str, Any]]:
        conn = self.store.reader().conn
        cursor = conn.execute(f"SELECT {', '.join(FIELDS)}, hash FROM audit_events ORDER BY rowid")
        names = [column[0] for column in cursor.description]
        for values in cursor:
            yield dict(zip(names, values, strict=True))

    def verify(self) -> VerifyResult:
        return verify_chain(self.rows(), self.read_head())


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    checked: int
    first_bad_seq: int | None = None
    problem: str = ""


def verify_chain(rows: Iterable[dict[str, Any]], head: tuple[int, str] | None) -> VerifyResult:
    prev_hash = GENESIS
    expected_seq = 1
    checked = 0
    hash_at_head: str | None = None
    for row in rows:
        seq = row["seq"]
        if seq != expected_seq:
            problem = (
                f"entry {expected_seq} is missing (next stored entry is {seq})"
                if seq > expected_seq
                else f"entry {seq} is out of order (expected {expected_seq})"
            )
            return VerifyResult(False, checked, expected_seq, problem)
        if row["prev_hash"] != prev_hash:
            return VerifyResult(
                False, checked, seq, f"entry {seq} does not follow entry {seq - 1} (chain broken)"
            )
        if entry_hash(row) != row["hash"]:
            return VerifyResult(False, checked, seq, f"entry {seq} was altered (hash mismatch)")
        prev_hash = row["hash"]
        if head is not None and seq == head[0]:
            hash_at_head = row["hash"]
        expected_seq += 1
        checked += 1
    if head is not None:
        head_seq, head_hash = head
        if checked < head_seq:
            return VerifyResult(
                False,
                checked,
                checked + 1,
                f"entries {checked + 1}..{head_seq} are missing (the log was truncated)",
            )
        if hash_at_head != head_hash:
            return VerifyResult(
                False,
                checked,
                head_seq,
                f"entry {head_seq} differs from the recorded chain head (entries were replaced)",
            )
    return VerifyResult(True, checked)


def export_jsonl(trail: AuditTrail, out: TextIO) -> int:
    count = 0
    for row in trail.rows():
        record = dict(row)
        record["event_name"] = NAMES.get(row["event_id"], "")
        record["sop_instance_uids"] = json.loads(row["sop_instance_uids"])
        record["detail"] = json.loads(row["detail"])
        out.write(json.dumps(record, sort_keys=True, ensure_ascii=False) + os.linesep)
        count += 1
    return count
