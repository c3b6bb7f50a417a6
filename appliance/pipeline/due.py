"""What visits still owe: result documents due, built, cleared — or dead-lettered, never lost.

A ``documents_due`` row is written in the same transaction as the outcome that makes a document
due (a complete visit's SR and PDF; an incomplete visit's once its quiet period is over; a heatmap
SC or an OCT's Ophthalmic Thickness Map (``opm``) that could not be made with its analysis; an
OCT's Segmentation (``seg``), owed by every analysis that gets one and built right after) and
deleted in the transaction that stores the document, so a crash at any step leaves either the
row (built again, under UIDs nobody has seen) or the document (never built twice). A build that
fails is tried ``MAX_TRIES`` times with a doubling delay, then the row turns ``dead`` with its
reason until an admin retries it (audited).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from appliance.audit import AuditTrail, events
from appliance.store import Store, Tx

KINDS = ("sr", "pdf", "sc", "opm", "seg")
MAX_TRIES = 3
RETRY_SECONDS = 30.0  # the delay after the first failed try; doubles per try


@dataclass(frozen=True)
class Due:
    id: int
    visit_key: str
    kind: str
    photo_pk: int  # the capture an SC / thickness map is made from; 0 for the SR and PDF
    capture_pk: int  # the capture whose outcome made it due (audit context, visit scope)
    trigger: str
    attempts: int
    updated_at: str  # the version read: a row renewed meanwhile is neither cleared nor counted


def iso(epoch: float | None = None) -> str:
    """The store's timestamp format for a moment in epoch seconds (now when None)."""
    moment = datetime.now(UTC) if epoch is None else datetime.fromtimestamp(epoch, UTC)
    return moment.isoformat(timespec="microseconds")


def owe(
    tx: Tx,
    *,
    visit_key: str,
    kinds: tuple[str, ...],
    capture_pk: int,
    trigger: str,
    photo_pk: int = 0,
    renew: bool = True,
    attempts: int = 0,
    error: str = "",
    now: float | None = None,
) -> None:
    """Record documents as due. ``renew``: a new reason (the visit's images changed), so a row
    already due or dead is due again now with its tries counted afresh; otherwise an existing
    row is left as it is (a dead one stays dead)."""
    moment = iso(now)
    delay = RETRY_SECONDS if attempts else 0.0
    next_at = iso((now if now is not None else datetime.now(UTC).timestamp()) + delay)
    for kind in kinds:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        conflict = (
            "DO UPDATE SET state = 'due', attempts = excluded.attempts, "
            "next_attempt_at = excluded.next_attempt_at, last_error = excluded.last_error, "
            "capture_pk = excluded.capture_pk, trigger = excluded.trigger, "
            "updated_at = excluded.updated_at"
            if renew
            else "DO NOTHING"
        )
        tx.execute(
            "INSERT INTO documents_due (visit_key, kind, photo_pk, capture_pk, trigger, "
            "attempts, next_attempt_at, last_error, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            f"ON CONFLICT (visit_key, kind, photo_pk) {conflict}",
            (visit_key, kind, photo_pk, capture_pk, trigger, attempts, next_at, error[:500],
             moment, moment),
        )  # fmt: skip


def ready(store: Store, now: float | None = None, limit: int = 100) -> list[Due]:
    """Rows due by ``now``, oldest first."""
    rows = store.query(
        "SELECT id, visit_key, kind, photo_pk, capture_pk, trigger, attempts, updated_at "
        "FROM documents_due "
        "WHERE state = 'due' AND next_attempt_at <= ? ORDER BY id LIMIT ?",
        (iso(now), limit),
    )
    return [Due(**row) for row in rows]


def is_owed(store: Store, visit_key: str) -> bool:
    """Whether the visit has visit documents due or dead (the quiet sweep leaves those be)."""
    return bool(
        store.scalar(
            "SELECT 1 FROM documents_due WHERE visit_key = ? AND photo_pk = 0 LIMIT 1",
            (visit_key,),
        )
    )


def settle(tx: Tx, due: Due) -> None:
    """The document is stored (or nothing new was owed): the row goes, in that transaction."""
    tx.execute(
        "DELETE FROM documents_due WHERE id = ? AND state = 'due' AND updated_at = ?",
        (due.id, due.updated_at),
    )


def fail(tx: Tx, due: Due, error: str, now: float | None = None) -> bool:
    """Count a failed try; True when it was the last one and the row is now dead."""
    tries = due.attempts + 1
    moment = datetime.now(UTC).timestamp() if now is None else now
    dead = tries >= MAX_TRIES
    cursor = tx.execute(
        "UPDATE documents_due SET attempts = ?, state = ?, next_attempt_at = ?, last_error = ?, "
        "updated_at = ? WHERE id = ? AND updated_at = ?",
        (
            tries,
            "dead" if dead else "due",
            iso(moment + RETRY_SECONDS * 2 ** (tries - 1)),
            error[:500],
            iso(moment),
            due.id,
            due.updated_at,
        ),
    )
    return dead and cursor.rowcount == 1


def counts(store: Store) -> dict[str, int]:
    row = store.one(
        "SELECT coalesce(sum(state = 'due'), 0) AS due, coalesce(sum(state = 'dead'), 0) AS dead "
        "FROM documents_due"
    )
    return {"due": int(row["due"]), "dead": int(row["dead"])} if row else {"due": 0, "dead": 0}


def dead_letters(store: Store, limit: int = 200) -> list[dict[str, Any]]:
    """Dead-lettered documents with their reasons (no PHI beyond the visit's study UID)."""
    return store.query(
        "SELECT d.id, d.visit_key, d.kind, d.photo_pk, d.trigger, d.attempts, d.last_error, "
        "d.updated_at, coalesce(s.study_instance_uid, '') AS study_instance_uid "
        "FROM documents_due d JOIN captures c ON c.id = d.capture_pk "
        "LEFT JOIN studies s ON s.id = c.study_pk WHERE d.state = 'dead' ORDER BY d.id LIMIT ?",
        (limit,),
    )


def retry_dead(
    store: Store,
    audit: AuditTrail,
    document: int | None = None,
    *,
    user: str,
    address: str = "",
) -> int:
    """Make dead-lettered documents (all, or one by id) due again now, tries counted afresh;
    audited in the same transaction. Returns how many."""
    now = iso()
    with store.write() as tx:
        cursor = tx.execute(
            "UPDATE documents_due SET state = 'due', attempts = 0, next_attempt_at = ?, "
            "updated_at = ? WHERE state = 'dead'" + (" AND id = ?" if document is not None else ""),
            (now, now, document) if document is not None else (now, now),
        )
        count = cursor.rowcount
        audit.record(
            tx,
            events.documents_retried(events.Who(user, address), count=count, document=document),
        )
    return count
