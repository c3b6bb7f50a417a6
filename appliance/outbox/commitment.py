"""Storage Commitment (push model) for destinations with ``storage_commitment`` on.

A job delivered to such a destination is ``awaiting`` commitment (set with its delivery, in the
same transaction). This worker batches awaiting jobs into N-ACTION requests: each request is a
``commitment_transactions`` row with one ``commitment_items`` row per instance, written (jobs
now ``requested``) before the N-ACTION leaves, so an answer can never arrive for a transaction
the database does not know. The archive's N-EVENT-REPORT — on our SCP, wired by service.py, or
on the request's own association — is recorded in one transaction with its audit events:

* an instance in the Referenced SOP Sequence → ``committed`` (retention may now count it);
* an instance in the Failed SOP Sequence → the failure reason kept on its item, and the job
  queued to be sent again (due at once; after its delivery it is requested again); after
  :data:`MAX_COMMIT_FAILURES` refusals of the same instance the job is dead-lettered with
  status ``commitment-failed`` (``appliance outbox retry --dead-letter`` starts it over);
* an instance the report does not mention → requested again.

A transaction with no answer after ``timeout_seconds`` is ``expired`` and its instances are
requested again under a new Transaction UID (a late answer to the old one still counts). An
N-ACTION that could not be delivered leaves the transaction ``unsent`` and is tried again after
``retry_seconds``. Every answer, expiry and failed request is an audit event (110104, detail
``storage_commitment``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from pydicom.dataset import Dataset
from pydicom.filereader import read_file_meta_info
from pydicom.uid import generate_uid

from appliance.audit import AuditTrail, Outcome, events
from appliance.loops import BackgroundLoop
from appliance.outbox.commit_dimse import Report, read_report, request_commitment
from appliance.outbox.dimse import DimseTarget
from appliance.store import BlobStore, Store, Tx

LOGGER = logging.getLogger(__name__)
MAX_COMMIT_FAILURES = 3  # refusals of one instance before its job is dead-lettered
TIMEOUT_SECONDS = 600.0  # no answer this long: requested again
RETRY_SECONDS = 30.0  # after an N-ACTION that could not be delivered
BATCH = 100  # instances per N-ACTION


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds")


class Commitments(BackgroundLoop):
    def __init__(
        self,
        store: Store,
        blobs: BlobStore,
        audit: AuditTrail,
        targets: list[DimseTarget],
        *,
        uid_root: str = "2.25.",
        timeout_seconds: float = TIMEOUT_SECONDS,
        retry_seconds: float = RETRY_SECONDS,
        max_failures: int = MAX_COMMIT_FAILURES,
        batch: int = BATCH,
        poll_seconds: float = 1.0,
        on_resend: Callable[[], None] = lambda: None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.blobs = blobs
        self.audit = audit
        self.targets = [t for t in targets if t.storage_commitment]
        self.uid_root = uid_root
        self.timeout_seconds = timeout_seconds
        self.retry_seconds = retry_seconds
        self.max_failures = max_failures
        self.batch = batch
        self.poll_seconds = poll_seconds
        self.on_resend = on_resend
        self.clock = clock
        self._not_before: dict[str, datetime] = {}
        super().__init__("commitment", self.pass_once, lambda: self.poll_seconds,
                         "storage commitment pass failed", logger=LOGGER)  # fmt: skip

    # -- the timer --------------------------------------------------------------------------
    def start(self) -> None:
        if not self.targets:
            return
        super().start()

    # -- requests ---------------------------------------------------------------------------
    def pass_once(self) -> int:
        """Expire unanswered transactions, then request commitment of what awaits it; returns
        how many instances were requested."""
        self.expire()
        return sum(self._request(target) for target in self.targets)

    def _new_uid(self) -> str:
        root = self.uid_root
        return str(generate_uid(None if root in ("", "2.25.") else root))

    def _request(self, target: DimseTarget) -> int:
        now = self.clock()
        if self._not_before.get(target.name, now) > now:
            return 0
        rows = self.store.query(
            "SELECT id, sop_instance_uid, file_path FROM outbox_jobs WHERE destination = ? "
            "AND state = 'delivered' AND commitment = 'awaiting' ORDER BY id LIMIT ?",
            (target.name, self.batch),
        )
        if not rows:
            return 0
        classes: dict[int, str] = {}
        unreadable: list[dict[str, Any]] = []
        for row in rows:
            try:
                meta = read_file_meta_info(self.blobs.resolve(row["file_path"]))
                classes[row["id"]] = str(meta.MediaStorageSOPClassUID)
            except Exception:  # gone or damaged: sending it again decides (dead-letters it)
                unreadable.append(row)
        uid = self._new_uid()
        with self.store.write() as tx:
            for row in unreadable:
                self._refused(tx, row["id"], "unreadable", now)
            transaction = tx.insert(
                "commitment_transactions",
                {
                    "transaction_uid": uid,
                    "destination": target.name,
                    "requested_at": _iso(now),
                },
            )
            items: list[tuple[str, str]] = []
            for row in rows:
                if row["id"] not in classes:
                    continue
                cursor = tx.execute(
                    "UPDATE outbox_jobs SET commitment = 'requested', updated_at = ? "
                    "WHERE id = ? AND state = 'delivered' AND commitment = 'awaiting'",
                    (_iso(now), row["id"]),
                )
                if cursor.rowcount != 1:
                    continue  # changed since it was read
                tx.insert(
                    "commitment_items",
                    {
                        "transaction_pk": transaction,
                        "job_pk": row["id"],
                        "sop_class_uid": classes[row["id"]],
                        "sop_instance_uid": row["sop_instance_uid"],
                    },
                )
                items.append((classes[row["id"]], row["sop_instance_uid"]))
        if unreadable:
            self.on_resend()
        if not items:
            return 0
        error = request_commitment(
            host=target.host,
            port=target.port,
            called_ae=target.ae_title,
            calling_ae=target.calling_ae,
            timeout=target.timeout,
            transaction_uid=uid,
            items=items,
            on_report=self.on_report,
            tls=target.tls,
        )
        if error:
            self._unsent(target, transaction, uid, error, [i[1] for i in items])
        return len(items)

    def _unsent(
        self, target: DimseTarget, transaction: int, uid: str, error: str, uids: list[str]
    ) -> None:
        now = self.clock()
        LOGGER.warning("storage commitment request to %s failed: %s", target.name, error)
        self._not_before[target.name] = now + timedelta(seconds=self.retry_seconds)
        with self.store.write() as tx:
            cursor = tx.execute(
                "UPDATE commitment_transactions SET state = 'unsent', error = ? "
                "WHERE id = ? AND state = 'requested'",
                (error[:500], transaction),
            )
            if cursor.rowcount != 1:
                return  # answered on the request's own association after all
            self._reopen(tx, transaction, now)
            self._record(
                tx,
                target.name,
                uid,
                uids,
                Outcome.MINOR_FAILURE,
                {"result": "request failed", "message": error, "next": "requested again"},
            )

    def expire(self) -> int:
        """Transactions unanswered after the timeout: their instances requested again."""
        now = self.clock()
        cutoff = _iso(now - timedelta(seconds=self.timeout_seconds))
        with self.store.write() as tx:
            stale = list(
                tx.db.query(
                    "SELECT * FROM commitment_transactions WHERE state = 'requested' "
                    "AND requested_at <= ? ORDER BY id",
                    (cutoff,),
                )
            )
            for row in stale:
                tx.execute(
                    "UPDATE commitment_transactions SET state = 'expired' WHERE id = ?",
                    (row["id"],),
                )
                uids = self._reopen(tx, row["id"], now)
                self._record(
                    tx,
                    row["destination"],
                    row["transaction_uid"],
                    uids,
                    Outcome.MINOR_FAILURE,
                    {
                        "result": "no answer",
                        "timeout_seconds": self.timeout_seconds,
                        "next": "requested again",
                    },
                )
        return len(stale)

    def _reopen(self, tx: Tx, transaction: int, now: datetime) -> list[str]:
        """A transaction's unanswered items expire; their jobs await a new request."""
        rows = list(
            tx.db.query(
                "SELECT job_pk, sop_instance_uid FROM commitment_items "
                "WHERE transaction_pk = ? AND state = 'requested'",
                (transaction,),
            )
        )
        tx.execute(
            "UPDATE commitment_items SET state = 'expired' "
            "WHERE transaction_pk = ? AND state = 'requested'",
            (transaction,),
        )
        for row in rows:
            tx.execute(
                "UPDATE outbox_jobs SET commitment = 'awaiting', updated_at = ? "
                "WHERE id = ? AND state = 'delivered' AND commitment = 'requested'",
                (_iso(now), row["job_pk"]),
            )
        return [row["sop_instance_uid"] for row in rows]

    # -- answers ----------------------------------------------------------------------------
    def on_report(
        self, event_type: int, info: Dataset | None, calling_ae: str, address: str
    ) -> int:
        """An N-EVENT-REPORT (Storage Commitment) → DIMSE status; never raises."""
        try:
            report = read_report(event_type, info)
        except Exception as exc:
            LOGGER.warning("unreadable storage commitment report from %s: %s", calling_ae, exc)
            return 0x0110
        try:
            return self._answer(report, calling_ae, address)
        except Exception:
            LOGGER.exception("recording a storage commitment report failed")
            return 0x0110

    def _answer(self, report: Report, calling_ae: str, address: str) -> int:
        now = self.clock()
        resend = False
        with self.store.write() as tx:
            transaction = tx.one(
                "SELECT * FROM commitment_transactions WHERE transaction_uid = ?",
                (report.transaction_uid,),
            )
            if transaction is None:
                LOGGER.warning("storage commitment report for an unknown transaction")
                return 0x0110
            if transaction["state"] == "answered":
                return 0x0000  # the same answer again: already recorded
            tx.execute(
                "UPDATE commitment_transactions SET state = 'answered', answered_at = ?, "
                "event_type = ? WHERE id = ?",
                (_iso(now), report.event_type, transaction["id"]),
            )
            committed, failed = set(report.committed), dict(report.failed)
            done: list[str] = []
            refused: list[tuple[str, str, str]] = []  # uid, reason, what happens next
            items = tx.db.query(
                "SELECT job_pk, sop_instance_uid FROM commitment_items WHERE transaction_pk = ?",
                (transaction["id"],),
            )
            for item in list(items):
                uid = item["sop_instance_uid"]
                if uid in committed:
                    self._item(tx, transaction["id"], item["job_pk"], "committed", "")
                    tx.execute(
                        "UPDATE outbox_jobs SET commitment = 'committed', updated_at = ? "
                        "WHERE id = ? AND state = 'delivered' "
                        "AND commitment IN ('awaiting', 'requested')",
                        (_iso(now), item["job_pk"]),
                    )
                    done.append(uid)
                elif uid in failed:
                    self._item(tx, transaction["id"], item["job_pk"], "failed", failed[uid])
                    step = self._refused(tx, item["job_pk"], failed[uid], now)
                    refused.append((uid, failed[uid], step))
                    resend = resend or step == "sent again"
            self._reopen(tx, transaction["id"], now)  # not mentioned: requested again
            where = {"calling_ae": calling_ae, "address": address}
            if done:
                self._record(
                    tx,
                    transaction["destination"],
                    report.transaction_uid,
                    done,
                    Outcome.SUCCESS,
                    {"result": "committed", **where},
                )
            if refused:
                dead = any(step == "dead-lettered" for _, _, step in refused)
                self._record(
                    tx,
                    transaction["destination"],
                    report.transaction_uid,
                    [uid for uid, _, _ in refused],
                    Outcome.SERIOUS_FAILURE if dead else Outcome.MINOR_FAILURE,
                    {
                        "result": "not committed",
                        "failures": {uid: [reason, step] for uid, reason, step in refused},
                        **where,
                    },
                )
        if resend:
            self.on_resend()
        return 0x0000

    def _item(self, tx: Tx, transaction: int, job: int, state: str, reason: str) -> None:
        tx.execute(
            "UPDATE commitment_items SET state = ?, failure_reason = ? "
            "WHERE transaction_pk = ? AND job_pk = ?",
            (state, reason, transaction, job),
        )

    def _refused(self, tx: Tx, job: int, reason: str, now: datetime) -> str:
        """The archive did not commit this job's instance: send it again, or dead-letter it
        after ``max_failures`` refusals. Returns what happens next."""
        row = tx.one(
            "SELECT commit_failures FROM outbox_jobs WHERE id = ? AND state = 'delivered' "
            "AND commitment IN ('awaiting', 'requested')",
            (job,),
        )
        if row is None:
            return "already handled"
        failures = int(row["commit_failures"]) + 1
        state = "dead" if failures >= self.max_failures else "queued"
        tx.execute(
            "UPDATE outbox_jobs SET state = ?, commitment = 'failed', commit_failures = ?, "
            "last_status = 'commitment-failed', last_error = ?, next_attempt_at = ?, "
            "updated_at = ? WHERE id = ?",
            (
                state,
                failures,
                f"not committed ({reason}), refusal {failures} of {self.max_failures}",
                _iso(now),
                _iso(now),
                job,
            ),
        )
        return "dead-lettered" if state == "dead" else "sent again"

    def _record(
        self,
        tx: Tx,
        destination: str,
        transaction_uid: str,
        uids: list[str],
        outcome: Outcome,
        detail: dict[str, Any],
    ) -> None:
        target = next((t for t in self.targets if t.name == destination), None)
        study = ""
        if uids:
            row = tx.one(
                "SELECT study_instance_uid FROM outbox_jobs WHERE sop_instance_uid = ? "
                "AND study_instance_uid IS NOT NULL LIMIT 1",
                (uids[0],),
            )
            study = row["study_instance_uid"] if row else ""
        self.audit.record(
            tx,
            events.transferred(
                events.Who(
                    events.OUTBOX,
                    target.address if target else "",
                    target.ae_title if target else "",
                ),
                events.About("", study, uids),
                outcome=outcome,
                detail={
                    "storage_commitment": transaction_uid,
                    "destination": destination,
                    **detail,
                },
            ),
        )


def summary(store: Store) -> dict[str, dict[str, int]]:
    """Per destination that asked for commitment: instances committed, awaiting commitment
    (delivered, not yet answered) and not committed (being sent again or dead-lettered)."""
    out: dict[str, dict[str, int]] = {}
    for row in store.query(
        "SELECT destination, "
        "coalesce(sum(commitment = 'committed'), 0) AS committed, "
        "coalesce(sum(commitment IN ('awaiting', 'requested') AND state = 'delivered'), 0) "
        "AS awaiting, coalesce(sum(commitment = 'failed'), 0) AS failed "
        "FROM outbox_jobs WHERE commitment IS NOT NULL GROUP BY destination ORDER BY destination"
    ):
        out[row["destination"]] = {
            "committed": int(row["committed"]),
            "awaiting_commitment": int(row["awaiting"]),
            "not_committed": int(row["failed"]),
        }
    return out
