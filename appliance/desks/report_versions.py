"""A visit's report versions: every SR and PDF issued, which are signed, what each replaces,
and what a signed PDF says.

The automated SR and PDF are preliminary; each sign-off issues a VERIFIED SR and a signed PDF
(``reviews`` names both), the first one "signed", any later one "amended". A new version names
what it replaces (``predecessors``): the newest preliminary one and, when it came after that,
the newest signed one — so an amendment references the signed pair before it. Nothing is ever
deleted here: the review page lists every version (``versions``); the station prints the newest
PDF.

The signed PDF states the clinician's decision as the outcome (``report_outcome``: on an
override their outcome, not the automated one, with the automated result named in a line
below it) and keeps the automated findings per eye, adding a line for a DR grade the clinician
set.
"""

from __future__ import annotations

import io
import json
from datetime import datetime
from typing import Any

import pydicom
from pydicom.dataset import Dataset

from appliance.desks.review_views import DocumentVersion
from appliance.desks.signers import OUTCOME_WORDS
from appliance.desks.signoff import Signature
from appliance.dicom.report_pdf import DR_WORDS, ReportSignature
from appliance.store import BlobStore, Store

KINDS = ("sr", "pdf")


def documents(store: Store, visit_key: str, kind: str | None = None) -> list[dict[str, Any]]:
    """The visit's SRs and PDFs (or one kind), newest first, each with the sign-off that issued
    it (``review_id`` etc. NULL for a preliminary one)."""
    kinds = (kind,) if kind else KINDS
    marks = ", ".join("?" for _ in kinds)
    return store.query(
        "SELECT d.id, d.kind, d.sop_instance_uid, d.file_path, d.created_at, d.purged_at, "
        "r.id AS review_id, r.meaning, r.signer_name, r.signer_credentials, u.username "
        "FROM derived_objects d LEFT JOIN reviews r ON r.visit_key = d.visit_key AND ("
        "(d.kind = 'sr' AND r.sr_sop_instance_uid = d.sop_instance_uid) OR "
        "(d.kind = 'pdf' AND r.pdf_sop_instance_uid = d.sop_instance_uid)) "
        "LEFT JOIN users u ON u.id = r.user_pk "
        f"WHERE d.visit_key = ? AND d.kind IN ({marks}) ORDER BY d.id DESC",
        (visit_key, *kinds),
    )


def versions(store: Store, visit_key: str) -> list[DocumentVersion]:
    """Every version of the visit's report, newest first."""
    out: list[DocumentVersion] = []
    seen: set[str] = set()
    for row in documents(store, visit_key):
        signer = ""
        if row["review_id"] is not None:
            name = row["signer_name"] or row["username"] or ""
            creds = row["signer_credentials"] or ""
            signer = f"{name}, {creds}" if creds else name
        status = (
            "preliminary"
            if row["review_id"] is None
            else "amended"
            if row["meaning"] == "amended"
            else "signed"
        )
        out.append(
            DocumentVersion(
                id=int(row["id"]),
                kind=row["kind"],
                sop_instance_uid=row["sop_instance_uid"],
                status=status,
                created_at=row["created_at"],
                signer=signer,
                meaning=row["meaning"] or "",
                current=row["kind"] not in seen,
                purged=row["purged_at"] is not None,
            )
        )
        seen.add(row["kind"])
    return out


def preliminary(store: Store, visit_key: str, kind: str = "sr") -> str | None:
    """The newest preliminary document of ``kind``."""
    row = next((r for r in documents(store, visit_key, kind) if r["review_id"] is None), None)
    return str(row["sop_instance_uid"]) if row else None


def predecessors(store: Store, blobs: BlobStore, visit_key: str, kind: str) -> list[Dataset]:
    """What a new signed version of ``kind`` replaces, newest first: the newest signed one if
    it came after the newest preliminary one (an amendment), and the newest preliminary one."""
    rows = [r for r in documents(store, visit_key, kind) if r["purged_at"] is None]
    chosen = []
    first = next((r for r in rows if r["review_id"] is None), None)
    signed = next((r for r in rows if r["review_id"] is not None), None)
    if signed is not None and (first is None or signed["id"] > first["id"]):
        chosen.append(signed)
    if first is not None:
        chosen.append(first)
    return [pydicom.dcmread(io.BytesIO(blobs.read(r["file_path"]))) for r in chosen]


def report_outcome(
    outcome_payload: str, signature: Signature
) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """What the signed PDF states: the outcome JSON (the clinician's decision as the outcome)
    and, per eye, lines added after the automated findings (a DR grade, an OCT centre-involving
    DME answer the clinician set)."""
    automated = json.loads(outcome_payload)
    outcome = dict(automated)
    if signature.decision == "override":
        words = OUTCOME_WORDS.get(signature.outcome_code, signature.outcome_code)
        kept = signature.outcome_code == automated.get("code")
        outcome.update(
            text=f"{words} (clinician's decision)",
            recall_months=automated.get("recall_months") if kept else None,
            urgency=automated.get("urgency") if kept else None,
            prompts=[
                f"The automated result was: {str(automated.get('text', '')).rstrip('.')}. "
                "The clinician's decision above replaces it; the findings below are the "
                "automated ones."
            ],
        )
    added = {
        eye: [f"Clinician's DR grade: {DR_WORDS[grade]} (replaces the automated grade)"]
        for eye, grade in signature.grades.items()
    }
    for eye, value in signature.oct_dme.items():
        added.setdefault(eye, []).append(
            f"Clinician's answer, centre-involving macular oedema on OCT: "
            f"{'yes' if value else 'no'} (replaces the automated answer)"
        )
    return outcome, added


def report_signature(signature: Signature, moment: datetime) -> ReportSignature:
    """The signer block of the signed PDF."""
    return ReportSignature(
        signer_name=signature.signer_name,
        credentials=signature.credentials,
        meaning=signature.meaning,
        signed_at=moment,
        decision=signature.decision_words,
    )
