"""The outbox queue in SQLite: one job per (object, destination), leased while sending.

States: ``queued`` (waiting, possibly until ``next_attempt_at`` after a failure) → ``leased``
(being sent; a lease that expires — the sender crashed — makes the job due again) →
``delivered`` | ``dead``. A job is acknowledged only after the archive answered, so a crash
resends rather than loses; the SOP Instance UID never changes between attempts. Each lease
carries its expiry as a token: an answer recorded under a lease that expired and was taken again
is ignored, so one attempt can never overwrite a newer one. A restarted process takes back the
leases its previous run left (:func:`reclaim_leases`) instead of waiting for them to expire.

``now`` parameters exist so that tests can drive the clock; callers normally leave them out.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from appliance.store import Store, Tx


@dataclass(frozen=True)
class Job:
    id: int
    kind: str
    destination: str
    sop_instance_uid: str
    file_path: str
    study_instance_uid: str | None
    attempts: int
    lease_until: str  # the lease this attempt holds (its token)


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds")


def _now(now: datetime | None) -> datetime:
    return datetime.now(UTC) if now is None else now


def enqueue(
    tx: Tx,
    *,
    kind: str,
    destination: str,
    sop_instance_uid: str,
    file_path: str,
    study: str | None,
    now: datetime | None = None,
) -> bool:
    """Add a job unless this object is already queued for that destination; True if added."""
    now_text = _iso(_now(now))
    cursor = tx.execute(
        "INSERT OR IGNORE INTO outbox_jobs (kind, destination, sop_instance_uid, file_path, "
        "study_instance_uid, next_attempt_at, created_at, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (kind, destination, sop_instance_uid, file_path, study, now_text, now_text, now_text),
    )
    return cursor.rowcount == 1


def lease(
    store: Store,
    destination: str,
    limit: int,
    lease_seconds: float,
    *,
    now: datetime | None = None,
) -> list[Job]:
    """Take up to ``limit`` due jobs for one destination, oldest first (per-study order kept)."""
    moment = _now(now)
    now_text, until = _iso(moment), _iso(moment + timedelta(seconds=lease_seconds))
    with store.write() as tx:
        rows = list(
            tx.db.query(
                "SELECT * FROM outbox_jobs WHERE destination = ? AND ("
                "(state = 'queued' AND next_attempt_at <= ?) "
                "OR (state = 'leased' AND lease_until <= ?)) ORDER BY id LIMIT ?",
                (destination, now_text, now_text, limit),
            )
        )
        for row in rows:
            tx.execute(
                "UPDATE outbox_jobs SET state = 'leased', lease_until = ?, "
                "attempts = attempts + 1, updated_at = ? WHERE id = ?",
                (until, now_text, row["id"]),
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
            lease_until=until,
        )
        for row in rows
    ]


def finish(
    tx: Tx,
    job: Job,
    state: str,
    status: str,
    error: str,
    retry_in: float = 0.0,
    *,
    await_commitment: bool = False,
    now: datetime | None = None,
) -> bool:
    """Record an attempt's result: ``delivered``, ``dead`` or back to ``queued`` after a delay.
    With ``await_commitment`` (a destination with storage commitment on) a delivered job is
    also marked ``awaiting`` commitment, in the same statement.

    Only under the lease the job was taken with; False (nothing changed) when that lease has
    since expired and the job was leased again."""
    moment = _now(now)
    cursor = tx.execute(
        "UPDATE outbox_jobs SET state = ?, last_status = ?, last_error = ?, lease_until = NULL, "
        "commitment = CASE WHEN ? AND ? = 'delivered' THEN 'awaiting' ELSE commitment END, "
        "next_attempt_at = ?, updated_at = ? WHERE id = ? AND state = 'leased' AND lease_until = ?",
        (
            state,
            status,
            error[:500],
            await_commitment,
            state,
            _iso(moment + timedelta(seconds=retry_in)),
            _iso(moment),
            job.id,
            job.lease_until,
        ),
    )
    return cursor.rowcount == 1


def reclaim_leases(store: Store, *, now: datetime | None = None) -> int:
    """Queue again (due at once) every job still leased: at start-up those leases belong to a
    previous run of the process that died mid-send. Returns how many."""
    now_text = _iso(_now(now))
    with store.write() as tx:
        cursor = tx.execute(
            "UPDATE outbox_jobs SET state = 'queued', lease_until = NULL, next_attempt_at = ?, "
            "updated_at = ? WHERE state = 'leased'",
            (now_text, now_text),
        )
        return cursor.rowcount


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


def requeue_dead(
    store: Store, destination: str | None = None, *, now: datetime | None = None
) -> int:
    """Queue dead-lettered jobs again (due at once; storage commitment refusals counted
    afresh); returns how many."""
    now_text = _iso(_now(now))
    with store.write() as tx:
        cursor = tx.execute(
            "UPDATE outbox_jobs SET state = 'queued', next_attempt_at = ?, updated_at = ?, "
            "commit_failures = 0 "
            "WHERE state = 'dead'" + (" AND destination = ?" if destination else ""),
            (now_text, now_text, destination) if destination else (now_text, now_text),
        )
        return cursor.rowcount
