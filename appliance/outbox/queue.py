"""The outbox queue in SQLite: one job per (object, destination), leased while sending.

States: ``queued`` (waiting, possibly until ``next_attempt_at`` after a failure) → ``leased``
(being sent; a lease that expires — the sender crashed — makes the job due again) →
``delivered`` | ``dead``. A job is acknowledged only after the archive answered, so a crash
resends rather than loses; the SOP Instance UID never changes between attempts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from appliance.store import Store, Tx, utcnow


@dataclass(frozen=True)
class Job:
    id: int
    kind: str
    destination: str
    sop_instance_uid: str
    file_path: str
    study_instance_uid: str | None
    attempts: int


def _later(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat(timespec="microseconds")


def enqueue(
    tx: Tx, *, kind: str, destination: str, sop_instance_uid: str, file_path: str, study: str | None
) -> bool:
    """Add a job unless this object is already queued for that destination; True if added."""
    now = utcnow()
    cursor = tx.execute(
        "INSERT OR IGNORE INTO outbox_jobs (kind, destination, sop_instance_uid, file_path, "
        "study_instance_uid, next_attempt_at, created_at, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (kind, destination, sop_instance_uid, file_path, study, now, now, now),
    )
    return cursor.rowcount == 1


def lease(store: Store, destination: str, limit: int, lease_seconds: float) -> list[Job]:
    """Take up to ``limit`` due jobs for one destination, oldest first (per-study order kept)."""
    now = utcnow()
    with store.write() as tx:
        rows = list(
            tx.db.query(
                "SELECT * FROM outbox_jobs WHERE destination = ? AND ("
                "(state = 'queued' AND next_attempt_at <= ?) "
                "OR (state = 'leased' AND lease_until <= ?)) ORDER BY id LIMIT ?",
                (destination, now, now, limit),
            )
        )
        until = _later(lease_seconds)
        for row in rows:
            tx.execute(
                "UPDATE outbox_jobs SET state = 'leased', lease_until = ?, "
                "attempts = attempts + 1, updated_at = ? WHERE id = ?",
                (until, now, row["id"]),
            )
    return [
        Job(
            id=row["id"],
            kind=row["kind"],
            destination=row["destination"],
            sop_instance_uid=row["sop_instance_uid"],
            file_path=row["file_path"],
            study_instance_uid=row["study_instance_uid"],
            attempts=row["attempts"] + 1,
        )
        for row in rows
    ]


def finish(tx: Tx, job: Job, state: str, status: str, error: str, retry_in: float = 0.0) -> None:
    """Record an attempt's result: ``delivered``, ``dead`` or back to ``queued`` after a delay."""
    tx.execute(
        "UPDATE outbox_jobs SET state = ?, last_status = ?, last_error = ?, lease_until = NULL, "
        "next_attempt_at = ?, updated_at = ? WHERE id = ? AND state = 'leased'",
        (state, status, error[:500], _later(retry_in), utcnow(), job.id),
    )


def status(store: Store) -> dict[str, Any]:
    rows = store.query(
        "SELECT destination, state, count(*) AS n, min(created_at) AS oldest "
        "FROM outbox_jobs GROUP BY destination, state ORDER BY destination, state"
    )
    out: dict[str, Any] = {}
    for row in rows:
        entry = out.setdefault(row["destination"], {})
        entry[row["state"]] = {"count": row["n"], "oldest": row["oldest"]}
    return out


def requeue_dead(store: Store, destination: str | None = None) -> int:
    with store.write() as tx:
        cursor = tx.execute(
            "UPDATE outbox_jobs SET state = 'queued', next_attempt_at = ?, updated_at = ? "
            "WHERE state = 'dead'" + (" AND destination = ?" if destination else ""),
            (utcnow(), utcnow(), destination) if destination else (utcnow(), utcnow()),
        )
        return cursor.rowcount
