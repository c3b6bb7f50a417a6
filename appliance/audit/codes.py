"""DICOM PS3.15 A.5 / PS3.16 CID 400-403 codes used in the audit trail."""

from __future__ import annotations

from enum import IntEnum, StrEnum


class EventID(StrEnum):
    """(code, DCM) — DICOM audit message event IDs."""

    APPLICATION_ACTIVITY = "110100"
    AUDIT_LOG_USED = "110101"
    INSTANCES_ACCESSED = "110103"
    INSTANCES_TRANSFERRED = "110104"
    STUDY_DELETED = "110105"
    EXPORT = "110106"
    IMPORT = "110107"
    QUERY = "110112"
    SECURITY_ALERT = "110113"
    USER_AUTHENTICATION = "110114"


class EventType(StrEnum):
    APPLICATION_START = "110120"
    APPLICATION_STOP = "110121"
    LOGIN = "110122"
    LOGOUT = "110123"
    SOFTWARE_CONFIGURATION = "110131"
    DATA_INTEGRITY_CHECK = "110136"  # "Audit Recording Changed" family; used for integrity alerts


class Action(StrEnum):
    """Event Action Code (RFC 3881)."""

    CREATE = "C"
    READ = "R"
    UPDATE = "U"
    DELETE = "D"
    EXECUTE = "E"


class Outcome(IntEnum):
    """Event Outcome Indicator."""

    SUCCESS = 0
    MINOR_FAILURE = 4
    SERIOUS_FAILURE = 8
    MAJOR_FAILURE = 12


NAMES = {
    "110100": "Application Activity",
    "110101": "Audit Log Used",
    "110103": "DICOM Instances Accessed",
    "110104": "DICOM Instances Transferred",
    "110105": "DICOM Study Deleted",
    "110106": "Export",
    "110107": "Import",
    "110112": "Query",
    "110113": "Security Alert",
    "110114": "User Authentication",
    "110120": "Application Start",
    "110121": "Application Stop",
    "110122": "Login",
    "110123": "Logout",
}
