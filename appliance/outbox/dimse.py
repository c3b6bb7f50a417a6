"""C-STORE to an archive: one association per batch, each file sent as stored (no re-encoding).

Never raises for network trouble: every job gets a :class:`SendResult` (no answer → retry).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from pydicom.filereader import read_file_meta_info
from pynetdicom import AE

from appliance.outbox.policy import SendResult, Verdict, classify_dimse

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class DimseTarget:
    name: str
    host: str
    port: int
    ae_title: str
    calling_ae: str
    timeout: float = 30.0

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def send(self, files: list[Path]) -> list[SendResult]:
        return send_files(self, files)


def send_files(target: DimseTarget, files: list[Path]) -> list[SendResult]:
    contexts: list[tuple[str, str]] = []
    for path in files:
        meta = read_file_meta_info(path)
        pair = (str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID))
        if pair not in contexts:
            contexts.append(pair)
    ae = AE(ae_title=target.calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = target.timeout
    for sop_class, syntax in contexts[:128]:
        ae.add_requested_context(sop_class, [syntax])
    try:
        assoc = ae.associate(target.host, target.port, ae_title=target.ae_title)
    except Exception as exc:  # bad address and the like: the archive is unreachable
        return [SendResult(Verdict.RETRY, "no-status", f"cannot connect: {exc}")] * len(files)
    if not assoc.is_established:
        reason = "association rejected" if assoc.is_rejected else "archive unreachable"
        return [SendResult(Verdict.RETRY, "no-status", reason)] * len(files)
    results: list[SendResult] = []
    try:
        for path in files:
            if not assoc.is_established:
                results.append(SendResult(Verdict.RETRY, "no-status", "association lost"))
                continue
            try:
                status = assoc.send_c_store(path)  # streamed from the file as stored
            except Exception as exc:
                results.append(
                    SendResult(Verdict.RETRY, "no-status", f"{type(exc).__name__}: {exc}")
                )
                continue
            code = status.get("Status") if status is not None and len(status) else None
            comment = str(status.get("ErrorComment", "")) if status is not None else ""
            results.append(classify_dimse(None if code is None else int(code), comment))
    finally:
        if assoc.is_established:
            assoc.release()
    return results
