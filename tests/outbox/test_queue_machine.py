"""A Hypothesis state machine over the real outbox queue, forwarder and SQLite store.

Rules: enqueue (and enqueue the same object again), a send the archive takes, an association
aborted part-way (retried), a rejection (dead-lettered), a sender dying mid-send (its lease
expires and the job is taken again), a crash and restart of the whole process (the new run
takes the leases back), a stalled sender answering after its lease was taken over, time passing,
and dead letters queued again.

Invariant: every (object, destination) has exactly one job, in exactly one of pending (queued,
leased or waiting to retry), delivered or dead-letter — what the archive's answers say it must
be; nothing is lost, nothing is sent again once delivered or dead, and every recorded answer
has its 110104 audit event. Only the archive is a test double; the clock is driven by the test.
"""

from __future__ import annotations

import shutil
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from appliance.audit import AuditTrail
from appliance.outbox import queue
from appliance.outbox.policy import SendResult, Verdict
from appliance.outbox.worker import Forwarder
from appliance.store import BlobStore, Store

DESTINATIONS = ("pacs", "mirror")
LEASE_SECONDS = 60.0
BATCH = 3
PENDING, DELIVERED, DEAD = "pending", "delivered", "dead"
CATEGORY = {"queued": PENDING, "leased": PENDING, "delivered": DELIVERED, "dead": DEAD}
Key = tuple[str, str]  # (SOP Instance UID, destination)


class Archive:
    """The remote archive: answers each file with the next scripted verdict (else success)."""

    def __init__(self, name: str, machine: QueueMachine) -> None:
        self.name = name
        self.ae_title = name.upper()
        self.address = f"test:{name}"
        self.lanes = 1
        self.machine = machine
        self.script: list[Verdict] = []
        self.stored: set[str] = set()  # an archive keeps one copy per SOP Instance UID
        self.answers: list[tuple[str, Verdict]] = []  # this pass

    def session(self) -> Archive:
        return self

    def close(self) -> None:
        pass

    def send(self, files: list[Path]) -> list[SendResult]:
        results = []
        for path in files:
            uid = path.read_text()
            verdict = self.script.pop(0) if self.script else Verdict.DONE
            self.machine.check_may_send((uid, self.name))
            if verdict is Verdict.DONE:
                self.stored.add(uid)
            self.answers.append((uid, verdict))
            status = {Verdict.DONE: "0x0000", Verdict.RETRY: "no-status", Verdict.DEAD: "0xC000"}
            results.append(SendResult(verdict, status[verdict], "scripted"))
        return results


class QueueMachine(RuleBasedStateMachine):
    objects = Bundle("objects")

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="outbox-machine-"))
        self.now = datetime(2030, 1, 1, tzinfo=UTC)
        self.archives = {name: Archive(name, self) for name in DESTINATIONS}
        self.expected: dict[Key, str] = {}
        self.abandoned: dict[Key, datetime] = {}  # leases held by a crashed or stalled sender
        self.recorded = 0  # answers the queue accepted (each must have its audit event)
        self.serial = 0
        self._open()

    # -- the appliance process ------------------------------------------------------------
    def _open(self) -> None:
        self.store = Store(self.dir / "appliance.db")
        self.blobs = BlobStore(self.dir)
        self.audit = AuditTrail(self.store, self.dir / "audit.head")
        self.forwarder = Forwarder(
            self.store,
            self.blobs,
            self.audit,
            list(self.archives.values()),
            batch=BATCH,
            lease_seconds=LEASE_SECONDS,
            backoff_base=5.0,
            backoff_cap=40.0,
            clock=lambda: self.now,
        )

    def teardown(self) -> None:
        try:
            self.store.close()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def check_may_send(self, key: Key) -> None:
        assert self.expected[key] == PENDING, f"{key} sent again after it was {self.expected[key]}"
        held = self.abandoned.get(key)
        assert held is None or held <= self.now, f"{key} sent while another sender's lease held"

    def _pass(self, script: dict[str, list[Verdict]]) -> int:
        for name, archive in self.archives.items():
            archive.script = list(script.get(name, []))
            archive.answers = []
        attempted = self.forwarder.pass_once()
        answered = 0
        for name, archive in self.archives.items():
            for uid, verdict in archive.answers:
                key = (uid, name)
                self.expected[key] = {
                    Verdict.DONE: DELIVERED,
                    Verdict.DEAD: DEAD,
                    Verdict.RETRY: PENDING,
                }[verdict]
                self.abandoned.pop(key, None)
                answered += 1
        assert attempted == answered
        self.recorded += answered
        return answered

    # -- rules ----------------------------------------------------------------------------
    @initialize(target=objects)
    def first_object(self) -> str:
        return self.enqueue()

    @rule(target=objects)
    def enqueue(self) -> str:
        self.serial += 1
        uid = f"1.2.826.0.1.3680043.10.{self.serial}"
        path = self.blobs.put(uid.encode(), "application/dicom")
        with self.store.write() as tx:
            for name in DESTINATIONS:
                added = queue.enqueue(
                    tx,
                    kind="received",
                    destination=name,
                    sop_instance_uid=uid,
                    file_path=path,
                    study=None,
                    now=self.now,
                )
                assert added
                self.expected[(uid, name)] = PENDING
        return uid

    @rule(uid=objects)
    def enqueue_again(self, uid: str) -> None:
        path = self.blobs.put(uid.encode(), "application/dicom")
        with self.store.write() as tx:
            for name in DESTINATIONS:
                assert not queue.enqueue(
                    tx,
                    kind="received",
                    destination=name,
                    sop_instance_uid=uid,
                    file_path=path,
                    study=None,
                    now=self.now,
                )

    @rule()
    def send_ok(self) -> None:
        self._pass({})

    @rule(name=st.sampled_from(DESTINATIONS), taken=st.integers(0, BATCH - 1))
    def abort(self, name: str, taken: int) -> None:
        """The association drops after ``taken`` instances: the rest got no answer."""
        self._pass({name: [Verdict.DONE] * taken + [Verdict.RETRY] * BATCH})

    @rule(name=st.sampled_from(DESTINATIONS), position=st.integers(0, BATCH - 1))
    def reject(self, name: str, position: int) -> None:
        self._pass({name: [Verdict.DONE] * position + [Verdict.DEAD]})

    @rule(name=st.sampled_from(DESTINATIONS), reached_archive=st.booleans())
    def crash_mid_send(self, name: str, reached_archive: bool) -> None:
        """Leased (as the forwarder does), maybe stored by the archive, then the sender dies and
        holds its lease until it expires (the process lives on)."""
        jobs = queue.lease(self.store, name, BATCH, LEASE_SECONDS, now=self.now)
        for job in jobs:
            key = (job.sop_instance_uid, name)
            self.check_may_send(key)
            if reached_archive:  # stored there, but the answer never reached us
                self.archives[name].stored.add(job.sop_instance_uid)
            self.abandoned[key] = self.now + timedelta(seconds=LEASE_SECONDS)

    @rule(name=st.sampled_from(DESTINATIONS), reached_archive=st.booleans())
    def crash_and_restart(self, name: str, reached_archive: bool) -> None:
        """The process dies mid-send (kill -9) and starts again on the same database: the new
        run takes back every lease left behind, without waiting for them to expire."""
        self.crash_mid_send(name, reached_archive)
        self.store.close()
        self._open()
        left = self.store.scalar("SELECT count(*) FROM outbox_jobs WHERE state = 'leased'")
        assert self.forwarder.recover() == left
        self.abandoned.clear()

    @rule(name=st.sampled_from(DESTINATIONS))
    def stalled_sender_answers_late(self, name: str) -> None:
        """A sender outlives its lease, another takes the job over, then the first answers: its
        answer is ignored where the job was taken over and recorded where it was not."""
        stalled = queue.lease(self.store, name, BATCH, LEASE_SECONDS, now=self.now)
        for job in stalled:
            self.check_may_send((job.sop_instance_uid, name))
        self.now += timedelta(seconds=LEASE_SECONDS)
        took_over = queue.lease(self.store, name, BATCH, LEASE_SECONDS, now=self.now)
        for job in took_over:
            self.check_may_send((job.sop_instance_uid, name))
        with self.store.write() as tx:
            for job in stalled:
                accepted = queue.finish(
                    tx, job, "queued", "no-status", "association lost", 5.0, now=self.now
                )
                assert accepted == (job.id not in {j.id for j in took_over})
                if accepted:
                    self.expected[(job.sop_instance_uid, name)] = PENDING
            for job in took_over:  # the sender now holding the lease is answered
                assert queue.finish(tx, job, "delivered", "0x0000", "", now=self.now)
                self.archives[name].stored.add(job.sop_instance_uid)
                self.expected[(job.sop_instance_uid, name)] = DELIVERED
                self.abandoned.pop((job.sop_instance_uid, name), None)

    @rule(seconds=st.sampled_from([1, 5, 30, LEASE_SECONDS, 3600]))
    def time_passes(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    @rule()
    def requeue_dead(self) -> None:
        dead = [key for key, state in self.expected.items() if state == DEAD]
        assert queue.requeue_dead(self.store, now=self.now) == len(dead)
        for key in dead:
            self.expected[key] = PENDING

    @precondition(lambda self: any(s == PENDING for s in self.expected.values()))
    @rule()
    def archive_recovers_and_the_queue_drains(self) -> None:
        """Given time and a healthy archive, every pending job is delivered: none is stuck."""
        self.now += timedelta(seconds=3600)
        while self._pass({}):
            pass
        stuck = [key for key, state in self.expected.items() if state == PENDING]
        assert stuck == []

    # -- invariants -----------------------------------------------------------------------
    @invariant()
    def each_object_is_in_exactly_the_state_its_answers_say(self) -> None:
        rows = self.store.query(
            "SELECT sop_instance_uid, destination, state FROM outbox_jobs ORDER BY id"
        )
        seen: dict[Key, str] = {}
        for row in rows:
            key = (row["sop_instance_uid"], row["destination"])
            assert key not in seen, f"two jobs for {key}"
            seen[key] = CATEGORY[row["state"]]
            if row["state"] == "leased":  # only a sender that died or stalled leaves a lease
                assert key in self.abandoned, f"{key} left leased"
        assert seen == self.expected  # nothing lost, nothing invented, each in one state

    @invariant()
    def delivered_means_the_archive_has_it(self) -> None:
        for (uid, name), state in self.expected.items():
            if state == DELIVERED:
                assert uid in self.archives[name].stored

    @invariant()
    def every_recorded_answer_is_audited(self) -> None:
        events = self.store.scalar(
            "SELECT count(*) FROM audit_events "
            "WHERE event_id = '110104' AND user_id = 'system:outbox'"
        )
        assert events == self.recorded


QueueMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=25,
    deadline=None,
    derandomize=True,
    database=None,
)
TestOutboxQueue = QueueMachine.TestCase
