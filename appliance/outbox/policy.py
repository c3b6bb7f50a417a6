"""What to do with each DIMSE outcome (../shared/docs/dicom-ophthalmic.md), and backoff.

Pure functions: no network, no database.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Verdict(StrEnum):
    DONE = "done"
    RETRY = "retry"
    DEAD = "dead"


@dataclass(frozen=True)
class SendResult:
    verdict: Verdict
    status: str  # "0x0000", "0xA700", "no-status", ...
    message: str = ""


def classify_dimse(status: int | None, comment: str = "") -> SendResult:
    """Success and warnings are done; out-of-resources and no answer are retried; the rest
    (cannot understand, SOP class mismatch / not supported / not authorised) are dead-lettered."""
    if status is None:
        return SendResult(Verdict.RETRY, "no-status", comment or "no response (abort, timeout)")
    text = f"0x{status:04X}"
    if status == 0x0000:
        return SendResult(Verdict.DONE, text, comment)
    if status in (0xB000, 0xB006, 0xB007) or (status & 0xF000) == 0xB000:
        return SendResult(Verdict.DONE, text, comment or "stored with a warning")
    if (status & 0xFF00) == 0xA700:
        return SendResult(Verdict.RETRY, text, comment or "archive out of resources")
    return SendResult(Verdict.DEAD, text, comment or "refused by the archive")


def backoff_seconds(attempts: int, base: float = 5.0, cap: float = 3600.0) -> float:
    """Exponential backoff: base, 2×base, 4×base … capped."""
    return float(min(cap, base * (2 ** max(attempts - 1, 0))))
