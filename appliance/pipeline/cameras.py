"""Camera qualification: which camera model a photograph came from, and whether that model is
qualified for automated screening.

Autonomous diabetic-retinopathy systems are cleared per camera model: a model validated on one
camera's photographs says nothing about another's. Here a camera model is *qualified* when
``appliance validate`` on that camera's own labelled photographs met the DR model card's
``acceptance`` targets; :func:`qualify` checks the report, stores its SHA-256, the figures, who
and when, and audits it. A photograph from a camera model that is not qualified keeps its
model results (a referable finding still refers) but never gets an automated negative: it is
marked for human grading (``unqualified_camera``), so the outcome rules send it to a grader.

The camera model is read from the DICOM header (Manufacturer + Manufacturer's Model Name) or,
for the hot folder and uploads, is the configured ``camera_model``.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom

from appliance.audit import AuditTrail, events
from appliance.store import Store, utcnow

LOGGER = logging.getLogger(__name__)

UNQUALIFIED = "unqualified_camera"
_SOURCES = {"hotfolder": "hot folder", "upload": "upload", "dicom": "DICOM"}


def camera_model(data: bytes, source: str, configured: str) -> str:
    """ "Manufacturer / Model" from a DICOM header, else the configured camera of the hot folder
    and uploads, else a name saying the camera is not known."""
    if data[128:132] == b"DICM":
        try:
            ds = pydicom.dcmread(
                io.BytesIO(data),
                stop_before_pixels=True,
                specific_tags=["Manufacturer", "ManufacturerModelName"],
            )
            maker = str(ds.get("Manufacturer", "") or "").strip()
            model = str(ds.get("ManufacturerModelName", "") or "").strip()
        except Exception:  # the capture was checked on the way in; a header oddity is no camera
            maker = model = ""
        if maker or model:
            return f"{maker or 'unknown maker'} / {model or 'unknown model'}"[:128]
    if configured.strip():
        return configured.strip()[:128]
    return f"unknown camera ({_SOURCES.get(source, source)})"


def is_qualified(store: Store, model: str) -> bool:
    row = store.one("SELECT status FROM camera_qualifications WHERE camera_model = ?", (model,))
    return row is not None and row["status"] == "qualified"


@dataclass(frozen=True)
class Verdict:
    met: bool
    failures: tuple[str, ...]
    figures: dict[str, Any]


def judge(report: Mapping[str, Any], acceptance: Mapping[str, float]) -> Verdict:
    """Whether a validation report meets the card's acceptance targets (point estimates, and
    enough referable and non-referable photographs for them to mean something)."""
    dr = report.get("referable_dr") or {}
    sens, spec = dr.get("sensitivity") or {}, dr.get("specificity") or {}
    figures = {
        "n": report.get("n"),
        "referable_dr_sensitivity": sens.get("value"),
        "referable_dr_specificity": spec.get("value"),
        "referable": sens.get("denominator"),
        "non_referable": spec.get("denominator"),
    }
    failures = []
    checks = (
        ("referable_dr_sensitivity", "referable-DR sensitivity"),
        ("referable_dr_specificity", "referable-DR specificity"),
    )
    for key, words in checks:
        value, target = figures[key], float(acceptance[key])
        if value is None or float(value) < target:
            failures.append(f"{words} {value} is below {target}")
    for key, words in (
        ("referable", "minimum_referable"),
        ("non_referable", "minimum_non_referable"),
    ):
        count, needed = figures[key] or 0, int(acceptance[words])
        if count < needed:
            failures.append(f"{count} {key.replace('_', '-')} photographs, {needed} needed")
    return Verdict(not failures, tuple(failures), figures)


def qualify(
    store: Store,
    audit: AuditTrail,
    model: str,
    report_path: Path,
    acceptance: Mapping[str, float],
    by: str,
) -> Verdict:
    """Qualify ``model`` on a validation report (``report.json``); refused (and audited) when
    the report does not meet the acceptance targets."""
    raw = report_path.read_bytes()
    verdict = judge(json.loads(raw), acceptance)
    digest = hashlib.sha256(raw).hexdigest()
    now = utcnow()
    with store.write() as tx:
        if verdict.met:
            tx.execute(
                "INSERT INTO camera_qualifications (camera_model, status, qualified_at, "
                "qualified_by, report_sha256, figures) VALUES (?, 'qualified', ?, ?, ?, ?) "
                "ON CONFLICT (camera_model) DO UPDATE SET status = 'qualified', "
                "qualified_at = excluded.qualified_at, qualified_by = excluded.qualified_by, "
                "report_sha256 = excluded.report_sha256, figures = excluded.figures",
                (model, now, by, digest, json.dumps(verdict.figures)),
            )
        audit.record(
            tx,
            events.camera_qualification(
                by,
                {
                    "camera_qualification": "qualified" if verdict.met else "refused",
                    "camera_model": model,
                    "report_sha256": digest,
                    "figures": verdict.figures,
                    "failures": list(verdict.failures),
                },
                ok=verdict.met,
            ),
        )
    return verdict


def revoke(store: Store, audit: AuditTrail, model: str, by: str) -> bool:
    with store.write() as tx:
        done = tx.execute(
            "UPDATE camera_qualifications SET status = 'revoked' WHERE camera_model = ? "
            "AND status = 'qualified'",
            (model,),
        ).rowcount
        if done:
            audit.record(
                tx,
                events.camera_qualification(
                    by, {"camera_qualification": "revoked", "camera_model": model}
                ),
            )
    return bool(done)


def cameras(store: Store) -> list[dict[str, Any]]:
    """Every camera model seen or qualified, with its photographs and qualification."""
    seen = {
        row["model"]: row
        for row in store.query(
            "SELECT json_extract(payload, '$.camera.model') AS model, count(*) AS photographs, "
            "max(created_at) AS last_seen FROM results WHERE kind = 'screening' "
            "AND json_extract(payload, '$.camera.model') IS NOT NULL GROUP BY model"
        )
    }
    status = {
        row["camera_model"]: row for row in store.query("SELECT * FROM camera_qualifications")
    }
    out = []
    for model in sorted(set(seen) | set(status)):
        q = status.get(model)
        out.append(
            {
                "model": model,
                "photographs": int(seen[model]["photographs"]) if model in seen else 0,
                "last_seen": seen[model]["last_seen"] if model in seen else None,
                "status": q["status"] if q else "unqualified",
                "qualified_at": q["qualified_at"] if q else None,
                "qualified_by": q["qualified_by"] if q else None,
                "report_sha256": q["report_sha256"] if q else None,
                "figures": json.loads(q["figures"]) if q and q["figures"] else None,
            }
        )
    return out
