"""The forwarder: lease due jobs per destination → send → record the answers, audited.

Each pass runs ``target.lanes`` sessions per destination at the same time (for DIMSE: one
association each), each leasing and sending up to ``batches_per_pass`` batches, stopping early
when nothing more is due or a batch met trouble (a retry), so one destination's backlog cannot
starve another's.

The answers to one batch (one association or one STOW-RS request) are recorded together in one
transaction after the archive answered the last of them: each job's new state and its 110104
event land together or not at all, and a crash before that commit resends the whole batch
under the same SOP Instance UIDs (the archive keeps one copy).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from appliance.audit import AuditTrail, Outcome, events
from appliance.loops import BackgroundLoop
from appliance.outbox import queue
from appliance.outbox.policy import SendResult, Verdict, backoff_seconds
from appliance.store import BlobStore, Store

LOGGER = logging.getLogger(__name__)


class Session(Protocol):
    """A connection to a destination for one pass: sends batches, then is closed."""

    def send(self, files: list[Path]) -> list[SendResult]: ...

    def close(self) -> None: ...


class Target(Protocol):
    """A destination: DIMSE (``dimse.DimseTarget``) or DICOMweb STOW-RS."""

    @property
    def name(self) -> str: ...

    @property
    def ae_title(self) -> str: ...

    @property
    def address(self) -> str: ...

    @property
    def lanes(self) -> int: ...

    def session(self) -> Session: ...


class Forwarder(BackgroundLoop):
    def __init__(
        self,
        store: Store,
        blobs: BlobStore,
        audit: AuditTrail,
        targets: list[Target],
        *,
        batch: int = 20,
        batches_per_pass: int = 10,
        lease_seconds: float = 300.0,
        backoff_base: float = 5.0,
        backoff_cap: float = 3600.0,
        poll_seconds: float = 1.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.blobs = blobs
        self.audit = audit
        self.targets = targets
        self.batch = batch
        self.batches_per_pass = batches_per_pass
        self.lease_seconds = lease_seconds
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.poll_seconds = poll_seconds
        self.clock = clock
        super().__init__("forwarder", self.pass_once, lambda: self.poll_seconds,
                         "forwarding pass failed", until_idle=True, logger=LOGGER)  # fmt: skip

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.targets]

    def recover(self) -> int:
        """Jobs a previous run of this process left leased (it died mid-send) are due again."""
        count = queue.reclaim_leases(self.store, now=self.clock())
        if count:
            LOGGER.warning("%d outbox job(s) left mid-send by the previous run queued again", count)
        return count

    def start(self) -> None:
        self.recover()
        super().start()

    def pass_once(self) -> int:
        """One round over every destination; returns how many jobs were attempted."""
        return sum(self._forward(target) for target in self.targets)

    def _forward(self, target: Target) -> int:
        """``target.lanes`` senders to one destination at the same time, each leasing its own
        batches: while one waits for the archive, another sends or records its answers."""
        lanes = max(1, target.lanes)
        if lanes == 1:
            return self._lane(target)
        with ThreadPoolExecutor(lanes - 1, thread_name_prefix=f"forward-{target.name}") as pool:
            others = [pool.submit(self._lane, target) for _ in range(lanes - 1)]
            attempted = self._lane(target)
            return attempted + sum(future.result() for future in others)

    def _lane(self, target: Target) -> int:
        """Up to ``batches_per_pass`` batches over one session; stops early when nothing more
        is due or a batch met archive trouble (a retry: the rest waits for its backoff)."""
        attempted = 0
        session = target.session()
        try:
            for _ in range(self.batches_per_pass):
                jobs = queue.lease(
                    self.store, target.name, self.batch, self.lease_seconds, now=self.clock()
                )
                if not jobs:
                    break
                results = session.send([self.blobs.resolve(job.file_path) for job in jobs])
                self._record(target, list(zip(jobs, results, strict=True)))
                attempted += len(jobs)
                if len(jobs) < self.batch or any(r.verdict is Verdict.RETRY for r in results):
                    break
        finally:
            session.close()
        return attempted

    def _record(self, target: Target, answers: list[tuple[queue.Job, SendResult]]) -> None:
        now = self.clock()
        commit = bool(getattr(target, "storage_commitment", False))
        with self.store.write() as tx:
            for job, result in answers:
                state = _STATE[result.verdict]
                delay = backoff_seconds(job.attempts, self.backoff_base, self.backoff_cap)
                if not queue.finish(
                    tx,
                    job,
                    state,
                    result.status,
                    result.message,
                    delay,
                    await_commitment=commit,
                    now=now,
                ):
                    LOGGER.warning("outbox job %d: lease lost, answer not recorded", job.id)
                    continue
                self.audit.record(
                    tx,
                    events.transferred(
                        events.Who(events.OUTBOX, target.address, target.ae_title),
                        events.About("", job.study_instance_uid or "", [job.sop_instance_uid]),
                        outcome=_OUTCOME[result.verdict],
                        detail={
                            "destination": target.name,
                            "job": job.id,
                            "attempt": job.attempts,
                            "status": result.status,
                            "result": state,
                            "message": result.message,
                        },
                    ),
                )
        for job, result in answers:
            if result.verdict is Verdict.DEAD:
                LOGGER.error(
                    "outbox job %d dead-lettered at %s: %s", job.id, target.name, result.status
                )


_STATE = {Verdict.DONE: "delivered", Verdict.DEAD: "dead", Verdict.RETRY: "queued"}
_OUTCOME = {
    Verdict.DONE: Outcome.SUCCESS,
    Verdict.RETRY: Outcome.MINOR_FAILURE,
    Verdict.DEAD: Outcome.SERIOUS_FAILURE,
}
