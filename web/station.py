"""Camera station (operators, clinicians): choose the patient, take photos, see verdicts live.

``/station`` shows today's worklist and the walk-in form until a patient is chosen, then the
patient, an upload form and the live visit (``/station/visit``, re-fetched every 2 s by
``web/static/app.js``). All queries and actions go through ``context.station()``
(``appliance/desks/station.py``); this module only renders.

PHI-view audit (110103), decided per response:

* the full page, a thumbnail and a report are audited every time they are served;
* a thumbnail or a report under these routes is served only when it belongs to the visit of
  the patient chosen at this station (``appliance/desks/station.py``): any other id answers
  404, so ids cannot be walked. Earlier visits (the patient's, today's finished ones, those a
  patient search found) are reopened read-only by their visit key in
  ``web/station_history.py``, each view and reprint audited there;
* the polled visit fragment is audited when what it shows changes (a new photograph, a verdict,
  an outcome, a report) and once per patient selection in each browser session — a digest of
  the shown content is kept in the signed session cookie, so an unchanged poll every 2 s adds
  nothing to the trail while every new fact a user is shown is still recorded. The fragment is
  ``@passive``: polling never keeps an idle session alive.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import Blueprint, Response, redirect, render_template, request, session, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user

from appliance.desks.accounts import Role
from appliance.desks.station_history import VisitLine
from appliance.desks.station_view import Report, StationVisit
from appliance.errors import RejectedInput
from web import context
from web.auth import audit_view, passive, roles

bp = Blueprint("station", __name__, url_prefix="/station")
STATION = (Role.OPERATOR, Role.CLINICIAN)
SEEN = "station_visit_seen"  # session key: the last visit content this browser was shown
SEX = {"M": "Male", "F": "Female", "O": "Other"}
FIELDS = {"macula": "Macula-centred", "disc": "Disc-centred"}
SOURCES = {"dicom": "from the camera", "hotfolder": "from the camera folder", "upload": "uploaded"}


# -- words for the templates -------------------------------------------------------------------
def person_name(value: str) -> str:
    """DICOM PN ``Family^Given^Middle`` → ``Family, Given Middle``."""
    parts = [p for p in (value or "").split("=")[0].split("^") if p]
    if len(parts) <= 1:
        return parts[0] if parts else ""
    return f"{parts[0]}, {' '.join(parts[1:])}"


def dicom_date(value: str) -> str:
    value = (value or "").strip()
    return f"{value[:4]}-{value[4:6]}-{value[6:8]}" if len(value) == 8 else value


def dicom_time(value: str) -> str:
    value = (value or "").strip()
    return f"{value[:2]}:{value[2:4]}" if len(value) >= 4 else value


def local_time(stamp: str) -> str:
    return datetime.fromisoformat(stamp).astimezone().strftime("%H:%M") if stamp else ""


def local_day_time(stamp: str) -> str:
    return datetime.fromisoformat(stamp).astimezone().strftime("%Y-%m-%d %H:%M") if stamp else ""


def eye_name(eye: str | None) -> str:
    return {"R": "Right eye", "L": "Left eye"}.get(eye or "", "Eye not known")


@bp.context_processor
def words() -> dict[str, Any]:
    return {
        "person_name": person_name,
        "dicom_date": dicom_date,
        "dicom_time": dicom_time,
        "local_time": local_time,
        "local_day_time": local_day_time,
        "eye_name": eye_name,
        "sex_words": lambda value: SEX.get(value or "", "Not stated"),
        "field_words": lambda value: FIELDS.get(value or "", "Field not recognised"),
        "source_words": lambda value: SOURCES.get(value, value),
        # clinicians review every patient; an operator sees only the patient chosen here
        "may_see_other_patients": current_user.is_authenticated
        and current_user.role == Role.CLINICIAN,
    }


# -- helpers -----------------------------------------------------------------------------------
def _who() -> dict[str, Any]:
    return {
        "user": current_user.username,
        "user_pk": current_user.user.id,
        "address": request.remote_addr or "",
    }


def _audit_visit(
    visit: StationVisit, what: str, *, always: bool, earlier: tuple[VisitLine, ...] = ()
) -> None:
    """The visit was shown: audit it (always for the page, with the patient's earlier visits
    listed beside it; on change for the polled fragment)."""
    shown = f"{visit.selection.id}:{visit.digest}"
    if not always and session.get(SEEN) == shown:
        return
    audit_view(
        what,
        patient_id=visit.selection.patient_id,
        study_instance_uid=visit.selection.study_instance_uid,
        sop_instance_uids=visit.sop_instance_uids,
        detail={
            "station_selection": visit.selection.id,
            "captures": [c.id for c in visit.captures],
            "outcome": (visit.outcome or {}).get("code"),
            "report": visit.report_id,
            **({"earlier_visits": [line.visit_key for line in earlier]} if earlier else {}),
        },
    )
    session[SEEN] = shown


def _page(
    error: str = "", form: dict[str, str] | None = None, status: int = 200
) -> ResponseReturnValue:
    station = context.station()
    selection = station.current()
    if selection is not None:
        visit = station.visit(selection)
        earlier = station.history.of_patient(
            selection.patient_id, selection.issuer, leave_out=visit.visit_keys
        )
        _audit_visit(visit, "station", always=True, earlier=earlier)
        return render_template(
            "station/index.html", selection=selection, visit=visit, earlier=earlier, error=error
        ), status
    who = _who()
    worklist = station.worklist(user=who["user"], address=who["address"])
    if worklist.entries:
        audit_view(
            "station_worklist",
            detail={"worklist_patients": [entry.item.patient_id for entry in worklist.entries]},
        )
    finished = station.history.finished_today(station.station, station.today())
    if finished:
        audit_view(
            "station_finished_today",
            detail={
                "patients": sorted({line.patient_id for line in finished}),
                "visits": [line.visit_key for line in finished],
            },
        )
    return render_template(
        "station/index.html",
        selection=None,
        worklist=worklist,
        finished=finished,
        error=error,
        form=form or {},
    ), status


# -- pages and actions -------------------------------------------------------------------------
@bp.get("")
@roles(*STATION)
def index() -> ResponseReturnValue:
    return _page()


@bp.post("/choose")
@roles(*STATION)
def choose() -> ResponseReturnValue:
    try:
        context.station().choose(request.form.get("key", ""), **_who())
    except RejectedInput as exc:
        return _page(error=exc.message, status=exc.http_status)
    return redirect(url_for("station.index"))


@bp.post("/walk-in")
@roles(*STATION)
def walk_in() -> ResponseReturnValue:
    form = {key: request.form.get(key, "") for key in
            ("patient_id", "family_name", "given_name", "birth_date", "sex")}  # fmt: skip
    try:
        context.station().walk_in(form, **_who())
    except RejectedInput as exc:
        return _page(error=exc.message, form=form, status=exc.http_status)
    return redirect(url_for("station.index"))


@bp.post("/finish")
@roles(*STATION)
def finish() -> ResponseReturnValue:
    who = _who()
    context.station().finish(user=who["user"], address=who["address"])
    session.pop(SEEN, None)
    return redirect(url_for("station.index"))


@bp.post("/captures/<int:capture_id>/eye")
@roles(*STATION)
def eye(capture_id: int) -> ResponseReturnValue:
    """A person's decision on a photograph's eye: keep the label, use the detected eye,
    relabel or exclude it (desks/eye_labels.py); only for a photograph of this station's visit."""
    who = _who()
    context.station().capture_identity(capture_id)  # NotFound unless it is shown here
    try:
        context.eye_labels().decide(
            capture_id,
            request.form.get("action", ""),
            eye=request.form.get("eye", ""),
            reason=request.form.get("reason", ""),
            user=who["user"],
            role=str(current_user.role),
            address=who["address"],
        )
    except RejectedInput as exc:
        return _page(error=exc.message, status=exc.http_status)
    return redirect(url_for("station.index") + f"#capture-{capture_id}")


@bp.get("/visit")
@roles(*STATION)
@passive
def visit() -> ResponseReturnValue:
    """The live part of the page (polled every 2 s): see the module docstring for its audit."""
    station = context.station()
    selection = station.current()
    if selection is None:
        return render_template("station/visit.html", visit=None)
    shown = station.visit(selection)
    _audit_visit(shown, "station_visit", always=False)
    return render_template("station/visit.html", visit=shown)


@bp.get("/captures/<int:capture_id>/thumbnail.jpg")
@roles(*STATION)
@passive  # loaded by the polled fragment's <img>: not activity, so idle logoff still happens
def thumbnail(capture_id: int) -> ResponseReturnValue:
    station = context.station()
    whose = station.capture_identity(capture_id)
    jpeg = station.thumbnail(capture_id)
    audit_view(
        "station_thumbnail",
        patient_id=whose["patient_id"],
        study_instance_uid=whose["study_instance_uid"],
        sop_instance_uids=[whose["sop_instance_uid"]] if whose["sop_instance_uid"] else [],
        detail={"capture": capture_id},
    )
    return Response(jpeg, mimetype="image/jpeg")


def _report(document_id: int, disposition: str) -> ResponseReturnValue:
    report = context.station().report(document_id)
    audit_view(
        "station_report",
        patient_id=report.patient_id,
        study_instance_uid=report.study_instance_uid,
        sop_instance_uids=[report.sop_instance_uid],
        detail={"document": document_id, "disposition": disposition},
    )
    return pdf_response(report, disposition)


def pdf_response(report: Report, disposition: str) -> Response:
    """A report PDF to read or print in the browser (``inline``) or to save (``attachment``)."""
    name = f"screening-report-{report.created_at[:10]}-{report.document_id}.pdf"
    response = Response(report.pdf, mimetype="application/pdf")
    response.headers["Content-Disposition"] = f'{disposition}; filename="{name}"'
    # Chromium shows a PDF in a synthetic page that embeds its viewer with inline styles: the
    # app-wide policy (default-src 'self', object-src 'none') would leave it blank. This
    # response is our own report with no scripts; it still cannot be framed.
    response.headers["Content-Security-Policy"] = (
        "object-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    )
    return response


@bp.get("/reports/<int:document_id>/report.pdf")
@roles(*STATION)
def report_pdf(document_id: int) -> ResponseReturnValue:
    """The report to read or print in the browser."""
    return _report(document_id, "inline")


@bp.get("/reports/<int:document_id>/download")
@roles(*STATION)
def report_download(document_id: int) -> ResponseReturnValue:
    return _report(document_id, "attachment")
