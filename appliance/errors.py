"""One base exception whose subclasses carry what the outside world needs.

``http_status`` is used by the web layer, ``dimse_status`` by the DICOM SCP, ``reason`` is a
stable machine code kept in the audit trail and on rejected files, and the message is written
for a person (never containing PHI).
"""

from __future__ import annotations


class ApplianceError(Exception):
    http_status = 500
    dimse_status = 0xC000  # cannot understand
    reason = "internal_error"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason


class RejectedInput(ApplianceError):
    """The input cannot be understood or is unsafe: the sender must fix it, not retry."""

    http_status = 422
    dimse_status = 0xC000
    reason = "unreadable"


class UnsupportedFormat(RejectedInput):
    http_status = 415
    reason = "unsupported_format"


class UnsupportedSOPClass(RejectedInput):
    dimse_status = 0x0122
    reason = "sop_class_not_supported"


class TooLarge(RejectedInput):
    http_status = 413
    reason = "too_large"


class OutOfResources(ApplianceError):
    """The appliance cannot take the input now (disk full): the sender should retry later."""

    http_status = 507
    dimse_status = 0xA700
    reason = "out_of_resources"


class NotAuthorised(ApplianceError):
    http_status = 401
    dimse_status = 0x0124
    reason = "not_authorised"


class OtherPatientsPhotograph(RejectedInput):
    """The same bytes are already held for another patient (or for none): refused, not filed
    silently as the first patient's copy. The message names no patient; ``held_patient_id``
    is for whoever may see it (the web layer decides by role)."""

    http_status = 409
    reason = "duplicate_other_patient"

    def __init__(self, *, capture_id: int, held_patient_id: str, patient_id: str) -> None:
        whose = "for another patient" if held_patient_id else "with no patient identity"
        super().__init__(
            f"this photograph was already received {whose} (capture {capture_id}); it was not"
            " filed for this patient — check which patient it belongs to"
        )
        self.capture_id = capture_id
        self.held_patient_id = held_patient_id
        self.patient_id = patient_id

    def naming(self) -> str:
        """The message for a person who may see the other patient's ID."""
        if not self.held_patient_id:
            return self.message
        return self.message.replace(
            "for another patient", f"for another patient (Patient ID {self.held_patient_id})"
        )
