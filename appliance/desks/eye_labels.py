"""The eye of a photograph, decided by a person (operators and clinicians).

A photograph whose given label contradicts a confident detection counts for neither eye until
someone decides (pipeline/eyes.py): keep the label, or use the detected eye. Any photograph may
also be relabelled or excluded, with a reason. Each decision is one transaction: the
``eye_decisions`` row, its audit event (naming the patient and the capture), the visit's outcome
decided again and, for a visit that is complete or has had documents, its SR and PDF due again
(pipeline/due.py); then the pipeline is woken to build them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from appliance.audit import AuditTrail, events
from appliance.domain import CaptureStatus, VisitOutcome
from appliance.errors import ApplianceError, RejectedInput
from appliance.pipeline.eyes import ACTIONS, EyeDecision
from appliance.store import Store, Tx, utcnow
from appliance.visits import ImageRecord, scope_of

LOGGER = logging.getLogger(__name__)
MAX_REASON = 500
EYES = ("L", "R")


class NotFound(ApplianceError):
    http_status = 404
    reason = "not_found"


class Deciding(Protocol):
    """What this desk needs of the pipeline (``pipeline.worker.Pipeline``)."""

    def capture_row(self, capture_id: int) -> dict[str, Any] | None: ...

    def decide_visit(self, tx: Tx, row: dict[str, Any], trigger: str = ...) -> VisitOutcome: ...


@dataclass(frozen=True)
class Decided:
    decision: EyeDecision
    outcome: VisitOutcome


class EyeLabels:
    def __init__(
        self,
        store: Store,
        audit: AuditTrail,
        pipeline: Deciding,
        wake: Callable[[], None] = lambda: None,
    ) -> None:
        self.store = store
        self.audit = audit
        self.pipeline = pipeline
        self.wake = wake  # the pipeline builds the documents made due

    def decide(
        self,
        capture_id: int,
        action: str,
        *,
        eye: str = "",
        reason: str = "",
        user: str,
        role: str,
        address: str = "",
    ) -> Decided:
        """Record a decision on a processed photograph's eye; RejectedInput says what is wrong."""
        row = self.pipeline.capture_row(capture_id)
        if row is None:
            raise NotFound("there is no such photograph")
        if row["status"] != CaptureStatus.PROCESSED:
            raise RejectedInput("the photograph has not been checked yet; wait a moment")
        record = ImageRecord.parse(self._payload(capture_id))
        detected = record.data.get("laterality_detected")
        chosen = _chosen_eye(action, eye, row["laterality"], detected)
        reason = " ".join((reason or "").split())
        if action in ("relabel", "exclude") and not reason:
            raise RejectedInput("say why: a reason is needed to relabel or exclude a photograph")
        if len(reason) > MAX_REASON:
            raise RejectedInput(f"the reason is longer than {MAX_REASON} characters")
        now = utcnow()
        with self.store.write() as tx:
            decision_id = tx.insert(
                "eye_decisions",
                {
                    "capture_pk": capture_id,
                    "action": action,
                    "eye": chosen,
                    "reason": reason,
                    "decided_by": user,
                    "role": role,
                    "decided_at": now,
                },
            )
            self.audit.record(
                tx,
                events.eye_decision(
                    events.Who(user, address),
                    events.About(
                        row["patient_identifier"] or "",
                        row["study_instance_uid"] or "",
                        [row["sop_instance_uid"]] if row["sop_instance_uid"] else [],
                    ),
                    capture_id=capture_id,
                    detail={
                        "action": action,
                        "eye": chosen,
                        "label_given": row["laterality"],
                        "eye_detected": detected,
                        "label_contradicted": record.laterality_mismatch,
                        "reason": reason,
                        "role": role,
                        "visit": scope_of(row).key,
                    },
                ),
            )
            outcome = self.pipeline.decide_visit(tx, row, trigger="eye_decision")
            tx.after_commit(self.wake)
        LOGGER.info("capture %d: eye decision %s (%s) by %s", capture_id, action, chosen, user)
        decision = EyeDecision(decision_id, capture_id, action, chosen, reason, user, role, now)
        return Decided(decision, outcome)

    def _payload(self, capture_id: int) -> str | None:
        row = self.store.one(
            "SELECT payload FROM results WHERE capture_pk = ? AND kind = 'screening' "
            "ORDER BY id DESC LIMIT 1",
            (capture_id,),
        )
        return row["payload"] if row else None


def _chosen_eye(action: str, eye: str, label: str | None, detected: str | None) -> str | None:
    """The eye a decision gives the photograph (None: excluded)."""
    if action not in ACTIONS:
        raise RejectedInput(f"action must be one of {', '.join(ACTIONS)}", reason="bad_decision")
    if action == "exclude":
        return None
    if action == "keep_label":
        if label not in EYES:
            raise RejectedInput("the photograph has no eye label to keep; relabel it instead")
        return label
    if action == "use_detected":
        if detected not in EYES:
            raise RejectedInput("no eye was detected on this photograph; relabel it instead")
        return detected
    if eye not in EYES:
        raise RejectedInput("choose the eye: L (left) or R (right)")
    return eye
