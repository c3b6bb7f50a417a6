"""The tamper-evident audit trail."""

from appliance.audit.codes import Action, EventID, EventType, Outcome
from appliance.audit.trail import AuditEvent, AuditTrail, VerifyResult, export_jsonl, verify_chain

__all__ = [
    "Action",
    "AuditEvent",
    "AuditTrail",
    "EventID",
    "EventType",
    "Outcome",
    "VerifyResult",
    "export_jsonl",
    "verify_chain",
]
