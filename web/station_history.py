"""The station's look back (operators, clinicians): patient search, an earlier visit reopened
read-only, its thumbnails and its newest report to reprint.

All of it goes through ``context.station().history`` (``appliance/desks/station_history.py``);
this module only renders. Audit: a search is recorded by the desk as a query (110112) with
the patients found; a reopened visit, each of its thumbnails and each reprint are recorded
here as PHI views (110103) every time they are served. A thumbnail or a report is served only
for a photograph or the newest report of the visit named in its URL.
"""

from __future__ import annotations

from flask import Blueprint, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user

from appliance.desks.station_history import MAX_QUERY, PastVisit
from appliance.errors import RejectedInput
from web import context
from web.auth import audit_view, roles
from web.station import STATION, pdf_response, words

bp = Blueprint("station_history", __name__, url_prefix="/station")
bp.context_processor(words)


def _audit(shown: PastVisit, what: str, sops: list[str], detail: dict[str, object]) -> None:
    audit_view(
        what,
        patient_id=shown.line.patient_id,
        study_instance_uid=shown.study_instance_uid,
        sop_instance_uids=sops,
        detail={"visit": shown.visit_key, **detail},
    )


@bp.route("/search", methods=["GET", "POST"])
@roles(*STATION)
def search() -> ResponseReturnValue:
    """Find a patient by ID (from its start) or name (any part), over every stored visit. The
    words are posted, never put in the URL: names stay out of access logs and browser history."""
    query = request.form.get("q", "")[: MAX_QUERY * 2] if request.method == "POST" else ""
    if not query.strip():
        return render_template("station/search.html", query="", result=None, error="")
    try:
        result = context.station().history.search(
            query, user=current_user.username, address=request.remote_addr or ""
        )
    except RejectedInput as exc:
        page = render_template("station/search.html", query=query, result=None, error=exc.message)
        return page, exc.http_status
    return render_template("station/search.html", query=query, result=result, error="")


@bp.get("/visits/<visit_key>")
@roles(*STATION)
def visit(visit_key: str) -> ResponseReturnValue:
    """An earlier visit, read-only: photographs, checklist, outcome, decision, report."""
    shown = context.station().history.visit(visit_key)
    _audit(
        shown,
        "station_past_visit",
        shown.sop_instance_uids,
        {
            "captures": [c.id for c in shown.captures],
            "outcome": (shown.outcome or {}).get("code"),
            "report": shown.report_id,
        },
    )
    free = context.station().current() is None
    return render_template("station/past.html", visit=shown, past=shown, station_free=free)


@bp.post("/visits/<visit_key>/choose")
@roles(*STATION)
def choose(visit_key: str) -> ResponseReturnValue:
    """The returning patient of that visit becomes the patient chosen here (a new visit)."""
    try:
        context.station().returning(
            visit_key,
            user=current_user.username,
            user_pk=current_user.user.id,
            address=request.remote_addr or "",
        )
    except RejectedInput as exc:
        shown = context.station().history.visit(visit_key)
        page = render_template(
            "station/past.html", visit=shown, past=shown, station_free=False, error=exc.message
        )
        return page, exc.http_status
    return redirect(url_for("station.index"))


@bp.get("/visits/<visit_key>/captures/<int:capture_id>/thumbnail.jpg")
@roles(*STATION)
def thumbnail(visit_key: str, capture_id: int) -> ResponseReturnValue:
    shown, jpeg = context.station().history.thumbnail(visit_key, capture_id)
    sop = next(c.sop_instance_uid for c in shown.captures if c.id == capture_id)
    _audit(shown, "station_past_thumbnail", [sop] if sop else [], {"capture": capture_id})
    return jpeg, 200, {"Content-Type": "image/jpeg"}


def _reprint(visit_key: str, disposition: str) -> ResponseReturnValue:
    shown, report = context.station().history.report(visit_key)
    _audit(
        shown,
        "station_reprint",
        [report.sop_instance_uid],
        {"document": report.document_id, "disposition": disposition},
    )
    return pdf_response(report, disposition)


@bp.get("/visits/<visit_key>/report.pdf")
@roles(*STATION)
def report_pdf(visit_key: str) -> ResponseReturnValue:
    """The visit's newest report, to read or print again."""
    return _reprint(visit_key, "inline")


@bp.get("/visits/<visit_key>/download")
@roles(*STATION)
def report_download(visit_key: str) -> ResponseReturnValue:
    return _reprint(visit_key, "attachment")
