"""Retention: local PHI files deleted a set number of days after confirmed delivery, audited.

A capture's files — the image as received, its heatmap (an OCT: thickness map, B-scans), the
objects made from it (OP, SC) —
are deleted once every outbox job of every object that came from it (the capture itself when
it arrived as DICOM, and each object made from it) is ``delivered`` — and, for a destination
with ``storage_commitment`` on, ``committed`` by the archive's Storage Commitment answer — and
the last of those answers is ``days`` old. A visit's documents (SR, PDF) follow the same rule
each on its own. Nothing is deleted while any of those jobs is queued, leased, waiting to retry,
awaiting commitment or dead-lettered, nor when nothing was ever queued (no confirmed delivery),
nor when ``days`` is 0.

Each deletion is one write: the rows get ``purged_at`` and a 110105 (DICOM Study Deleted) event
names the instances, in the same transaction; the files are removed right after that commit.
A crash in between leaves files that :meth:`Retention.recover` removes at the next start, so a
file is never deleted without its audit event, and never kept after it. The database rows
(identity, results, the audit trail) stay.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from appliance.audit import AuditTrail, events
from appliance.loops import BackgroundLoop
from appliance.store import BlobStore, Store, Tx
from appliance.visits import ImageRecord

LOGGER = logging.getLogger(__name__)
SWEEP_SECONDS = 3600.0
BATCH = 100  # deletions per transaction

# Every object a capture gave rise to (itself when it arrived as DICOM, and what was made from
# it), with how many of its jobs there are, how many are delivered, and the last answer's time.
_CAPTURE_OBJECTS = """
WITH objects(capture_id, uid) AS (
    SELECT id, sop_instance_uid FROM captures
    WHERE purged_at IS NULL AND media_type = 'application/dicom'
        AND sop_instance_uid IS NOT NULL
    UNION
    SELECT d.capture_pk, d.sop_instance_uid FROM derived_objects d
    JOIN captures c ON c.id = d.capture_pk WHERE c.purged_at IS NULL
),
per_object AS (
    SELECT o.capture_id, count(j.id) AS jobs,
        coalesce(sum(j.state = 'delivered' AND coalesce(j.commitment, 'committed') = 'committed'),
            0) AS delivered, max(j.updated_at) AS last
    FROM objects o LEFT JOIN outbox_jobs j ON j.sop_instance_uid = o.uid
    GROUP BY o.capture_id, o.uid
)
SELECT capture_id, max(last) AS delivered_at FROM per_object GROUP BY capture_id
HAVING min(jobs > 0 AND delivered = jobs) = 1 AND max(last) <= ?
ORDER BY capture_id LIMIT ?
"""

_DOCUMENTS = """
SELECT d.id, max(j.updated_at) AS delivered_at
FROM derived_objects d JOIN outbox_jobs j ON j.sop_instance_uid = d.sop_instance_uid
WHERE d.capture_pk IS NULL AND d.purged_at IS NULL
GROUP BY d.id
HAVING min(j.state = 'delivered' AND coalesce(j.commitment, 'committed') = 'committed') = 1
    AND max(j.updated_at) <= ?
ORDER BY d.id LIMIT ?
"""


class Retention(BackgroundLoop):
    def __init__(
        self,
        store: Store,
        blobs: BlobStore,
        audit: AuditTrail,
        days: int,
        *,
        interval_seconds: float = SWEEP_SECONDS,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if days < 0:
            raise ValueError("retention_days must be 0 (keep forever) or a number of days")
        self.store = store
        self.blobs = blobs
        self.audit = audit
        self.days = days
        self.interval_seconds = interval_seconds
        self.clock = clock
        self._recovered = False
        super().__init__("retention", self._pass, lambda: self.interval_seconds,
                         "retention sweep failed", logger=LOGGER)  # fmt: skip

    # -- the timer --------------------------------------------------------------------------
    def start(self) -> None:
        if self.days <= 0:
            return
        super().start()

    def _pass(self) -> None:
        if not self._recovered:  # first: deletions a previous run left half done
            self._recovered = True
            try:
                self.recover()
            except Exception:
                LOGGER.exception("retention: finishing earlier deletions failed")
        self.sweep()

    # -- the work ---------------------------------------------------------------------------
    def sweep(self) -> int:
        """Delete what is due; returns how many captures and documents were deleted."""
        if self.days <= 0:
            return 0
        cutoff = (self.clock() - timedelta(days=self.days)).isoformat(timespec="microseconds")
        total = 0
        while not self.stopping:
            with self.store.write() as tx:
                now = self.clock().isoformat(timespec="microseconds")
                done = 0
                for row in list(tx.db.query(_CAPTURE_OBJECTS, (cutoff, BATCH))):
                    self._purge_capture(tx, int(row["capture_id"]), row["delivered_at"], now)
                    done += 1
                for row in list(tx.db.query(_DOCUMENTS, (cutoff, BATCH))):
                    self._purge_document(tx, int(row["id"]), row["delivered_at"], now)
                    done += 1
            total += done
            if done < BATCH:
                break
        if total:
            LOGGER.info("retention: local files of %d object group(s) deleted", total)
        return total

    def recover(self) -> int:
        """Remove files of rows already marked deleted (a crash came between commit and
        removal); returns how many files were removed."""
        paths = [
            row["file_path"]
            for table in ("captures", "derived_objects")
            for row in self.store.query(
                f"SELECT file_path FROM {table} WHERE purged_at IS NOT NULL"
            )
        ]
        for row in self.store.query(
            "SELECT r.payload FROM results r JOIN captures c ON c.id = r.capture_pk "
            "WHERE c.purged_at IS NOT NULL"
        ):
            paths.extend(_heatmaps(row["payload"]))
        return self._remove([p for p in paths if self._unreferenced(None, p)])

    def _purge_capture(self, tx: Tx, capture_id: int, delivered_at: str, now: str) -> None:
        capture = tx.one(
            "SELECT c.file_path, c.sop_instance_uid, c.media_type, p.patient_id, "
            "s.study_instance_uid FROM captures c LEFT JOIN patients p ON p.id = c.patient_pk "
            "LEFT JOIN studies s ON s.id = c.study_pk WHERE c.id = ?",
            (capture_id,),
        )
        assert capture is not None
        derived = list(
            tx.db.query(
                "SELECT kind, sop_instance_uid, study_instance_uid, file_path "
                "FROM derived_objects WHERE capture_pk = ? AND purged_at IS NULL ORDER BY id",
                (capture_id,),
            )
        )
        paths = [capture["file_path"], *(d["file_path"] for d in derived)]
        for result in tx.db.query(
            "SELECT payload FROM results WHERE capture_pk = ?", (capture_id,)
        ):
            paths.extend(_heatmaps(result["payload"]))
        tx.execute("UPDATE captures SET purged_at = ? WHERE id = ?", (now, capture_id))
        tx.execute(
            "UPDATE derived_objects SET purged_at = ? WHERE capture_pk = ? AND purged_at IS NULL",
            (now, capture_id),
        )
        uids = [capture["sop_instance_uid"]] if capture["media_type"] == "application/dicom" else []
        uids += [d["sop_instance_uid"] for d in derived]
        study = capture["study_instance_uid"] or next(
            (d["study_instance_uid"] for d in derived), ""
        )
        self._audit(
            tx,
            patient_id=capture["patient_id"] or "",
            study=study,
            uids=uids,
            detail={
                "capture_id": capture_id,
                "objects": [d["kind"] for d in derived],
                "delivered_at": delivered_at,
            },
            files=len(paths),
        )
        self._remove_after_commit(tx, paths)

    def _purge_document(self, tx: Tx, derived_id: int, delivered_at: str, now: str) -> None:
        document = tx.one("SELECT * FROM derived_objects WHERE id = ?", (derived_id,))
        assert document is not None
        tx.execute("UPDATE derived_objects SET purged_at = ? WHERE id = ?", (now, derived_id))
        patient = tx.one(
            "SELECT p.patient_id FROM studies s JOIN patients p ON p.id = s.patient_pk "
            "WHERE s.study_instance_uid = ?",
            (document["study_instance_uid"],),
        )
        self._audit(
            tx,
            patient_id=patient["patient_id"] if patient else "",
            study=document["study_instance_uid"],
            uids=[document["sop_instance_uid"]],
            detail={
                "visit": document["visit_key"],
                "objects": [document["kind"]],
                "delivered_at": delivered_at,
            },
            files=1,
        )
        self._remove_after_commit(tx, [document["file_path"]])

    def _audit(
        self,
        tx: Tx,
        *,
        patient_id: str,
        study: str,
        uids: list[str],
        detail: dict[str, Any],
        files: int,
    ) -> None:
        self.audit.record(
            tx,
            events.deleted(
                events.RETENTION,
                {**detail, "reason": "retention", "retention_days": self.days, "files": files},
                events.About(patient_id, study, uids),
            ),
        )

    def _remove_after_commit(self, tx: Tx, paths: list[str]) -> None:
        unused = [p for p in paths if self._unreferenced(tx, p)]

        def remove() -> None:
            self._remove(unused)

        tx.after_commit(remove)

    def _unreferenced(self, tx: Tx | None, path: str) -> bool:
        """No capture or object that is kept still points at this file (names are content
        hashes, so two rows could share one)."""
        sql = (
            "SELECT 1 FROM captures WHERE file_path = ? AND purged_at IS NULL UNION ALL "
            "SELECT 1 FROM derived_objects WHERE file_path = ? AND purged_at IS NULL LIMIT 1"
        )
        row = tx.one(sql, (path, path)) if tx is not None else self.store.one(sql, (path, path))
        return row is None

    def _remove(self, paths: list[str]) -> int:
        removed = 0
        for relative in dict.fromkeys(paths):
            try:
                target = self.blobs.resolve(relative)
                if target.exists():
                    target.unlink()
                    removed += 1
            except (OSError, ValueError):
                LOGGER.exception("retention: could not remove a stored file")
        return removed


def _heatmaps(payload: str | None) -> list[str]:
    """The files the pipeline made from a capture: its heatmap; of an OCT, its thickness map
    and central B-scan pictures, every B-scan's layers."""
    try:
        record = ImageRecord.parse(payload)
        scan = record.oct
        made = [record.heatmap]
        if scan is not None:
            made += [scan.thickness_map, scan.bscan, scan.bscan_layers, scan.layers]
    except (ValueError, AttributeError, TypeError):
        return []
    return [path for path in made if isinstance(path, str) and path]
