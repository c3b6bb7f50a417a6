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
