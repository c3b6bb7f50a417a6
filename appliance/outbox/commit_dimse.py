"""Storage Commitment Push Model on the wire (PS3.4 Annex J): the N-ACTION request and the
N-EVENT-REPORT's answer, read into plain records.

The request (Action Type 1, the well-known instance 1.2.840.10008.1.20.1.1) carries a
Transaction UID and the Referenced SOP Sequence of the instances the archive is asked to take
responsibility for. The archive answers later with an N-EVENT-REPORT (Event Type 1: all
committed; 2: some failed) naming the same Transaction UID, the instances committed (Referenced
SOP Sequence) and those not (Failed SOP Sequence, each with a Failure Reason) — usually on a
new association to our SCP, sometimes on the request's own association; both end in the same
callback. Never raises for network trouble: :func:`request_commitment` returns why not.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt

from appliance.tls import TlsClient, client_context

LOGGER = logging.getLogger(__name__)
PUSH_MODEL = "1.2.840.10008.1.20.1"
PUSH_MODEL_INSTANCE = "1.2.840.10008.1.20.1.1"
ACTION_REQUEST = 1
EVENT_ALL_COMMITTED = 1
EVENT_SOME_FAILED = 2

# A report handler: (Event Type ID, Event Information, calling AE, address) → DIMSE status.
ReportHandler = Callable[[int, Dataset, str, str], int]


@dataclass(frozen=True)
class Report:
    """What an N-EVENT-REPORT said about one transaction."""

    transaction_uid: str
    event_type: int
    committed: tuple[str, ...]  # SOP Instance UIDs
    failed: tuple[tuple[str, str], ...]  # (SOP Instance UID, failure reason as 0xNNNN)


def request_dataset(transaction_uid: str, items: list[tuple[str, str]]) -> Dataset:
    """The N-ACTION's Action Information: ``items`` are (SOP Class UID, SOP Instance UID)."""
    ds = Dataset()
    ds.TransactionUID = transaction_uid
    references = []
    for sop_class, sop_instance in items:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop_instance
        references.append(item)
    ds.ReferencedSOPSequence = references
    return ds


def read_report(event_type: int, info: Dataset | None) -> Report:
    """The Event Information of a Storage Commitment N-EVENT-REPORT; ValueError when it has no
    Transaction UID."""
    if info is None or not str(info.get("TransactionUID", "")).strip():
        raise ValueError("the report carries no Transaction UID")
    committed = tuple(
        str(item.ReferencedSOPInstanceUID)
        for item in info.get("ReferencedSOPSequence", [])
        if "ReferencedSOPInstanceUID" in item
    )
    failed = []
    for item in info.get("FailedSOPSequence", []):
        if "ReferencedSOPInstanceUID" not in item:
            continue
        reason = item.get("FailureReason")
        failed.append(
            (
                str(item.ReferencedSOPInstanceUID),
                "no-reason" if reason is None else f"0x{int(reason):04X}",
            )
        )
    return Report(str(info.TransactionUID).strip(), int(event_type), committed, tuple(failed))


def request_commitment(
    *,
    host: str,
    port: int,
    called_ae: str,
    calling_ae: str,
    timeout: float,
    transaction_uid: str,
    items: list[tuple[str, str]],
    on_report: ReportHandler | None = None,
    tls: TlsClient | None = None,
) -> str:
    """Send one N-ACTION; "" when the archive accepted the request, else why not (a retry).

    A report the archive sends back on this same association goes to ``on_report``."""
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.add_requested_context(PUSH_MODEL, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    handlers: list[Any] = []
    if on_report is not None:
        handlers.append((evt.EVT_N_EVENT_REPORT, _same_association_handler(on_report)))
    try:
        context = client_context(tls) if tls is not None else None
        assoc = ae.associate(
            host,
            port,
            ae_title=called_ae,
            evt_handlers=handlers,
            tls_args=(context, host) if context is not None else None,
        )
    except Exception as exc:
        return f"cannot connect: {exc}"
    if not assoc.is_established:
        if context is not None and context.failure:
            return context.failure
        return "association rejected" if assoc.is_rejected else "archive unreachable"
    try:
        if not assoc.accepted_contexts:
            return "the archive does not accept Storage Commitment"
        status, _ = assoc.send_n_action(
            request_dataset(transaction_uid, items),
            ACTION_REQUEST,
            PUSH_MODEL,
            PUSH_MODEL_INSTANCE,
        )
        code = status.get("Status") if status is not None and len(status) else None
        if code is None:
            return "no answer to the N-ACTION"
        if int(code) != 0x0000:
            comment = str(status.get("ErrorComment", ""))
            return f"N-ACTION refused 0x{int(code):04X} {comment}".strip()
        return ""
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        with contextlib.suppress(Exception):
            if assoc.is_established:
                assoc.release()


def _same_association_handler(on_report: ReportHandler) -> Callable[[Any], Any]:
    def handle(event: Any) -> tuple[int, None]:
        try:
            requestor = event.assoc.acceptor  # we requested: the archive is the acceptor
            code = on_report(
                int(event.event_type),
                event.event_information,
                str(requestor.ae_title).strip(),
                str(requestor.address),
            )
        except Exception:
            LOGGER.exception("storage commitment report on the request's association failed")
            code = 0x0110
        return code, None

    return handle
