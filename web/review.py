"""Clinician review: what the model saw, its grades, accept or override (a VERIFIED SR).

``/review`` lists the visits (waiting ones first, refer first); ``/review/<visit>`` shows each
eye's photographs with the heatmap toggle and zoom, the findings and the outcome, every version
of the report (preliminary, signed, amended: SR and PDF) and the sign-off form with the meaning
of the signature; ``POST /review/<visit>/sign`` accepts or overrides, signed with the password
re-entered (a wrong one: 403, audited, counted toward the lockout);
``/review/<visit>/documents/<id>/report.pdf`` opens one PDF version (audited);
``/review/<visit>/oct/<id>/thickness.png`` and ``…/bscan/<n>.png`` an OCT volume's thickness
map (ETDRS grid) and its B-scan ``n`` with ILM / RPE / fluid (``appliance/desks/review_oct.py``
through ``context.review_oct()``; each served audited, a frame outside the volume 404);
``POST /review/<visit>/captures/<id>/eye`` decides a photograph's eye (keep the label, use the
detected eye, relabel or exclude with a reason) through the same desk as the station
(``appliance/desks/eye_labels.py``: decision, audit, outcome and documents re-derived). Everything
comes from the review desk (``appliance/desks/review.py``) through ``context.review()``: the
pictures are JPEG/PNG bytes the core produced, and the SQL lives there too. Every view of PHI
is audited (110103): the list (naming the patients it shows), each visit page, each photograph
and heatmap served, and each report version opened.

Access is by role: a clinician may open every visit (the review desk is the clinic's list of
visits to sign, not one patient's chart). Objects inside a visit are fetched by visit *and* id:
a photograph or heatmap id of another visit answers 404.
"""

from __future__ import annotations

from typing import Any

from flask import (
    Blueprint,
    Response,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.typing import ResponseReturnValue
from flask_login import current_user

from appliance.desks.accounts import Role
from appliance.desks.review import ReviewDesk
from appliance.desks.signers import MEANINGS
from appliance.desks.signoff import Decision
from appliance.errors import ApplianceError, RejectedInput
from web import context
from web.auth import audit_view, roles

bp = Blueprint("review", __name__, url_prefix="/review")

# Outcome code → (badge class, icon, word): colour is never the only signal.
OUTCOMES = {
    "refer": ("bad", "\u26a0", "Refer"),
    "glaucoma_refer": ("bad", "\u26a0", "Refer (glaucoma)"),
    "retake": ("warn", "\u21bb", "Retake"),
    "incomplete": ("warn", "\u2026", "Incomplete"),
    "rescreen": ("ok", "\u2713", "Rescreen"),
    "human_grading": ("warn", "\u26a0", "Human grading"),
    "no_model": ("info", "\u2139", "Not graded"),
}
ICDR = (
    "0 \u2014 no apparent retinopathy",
    "1 \u2014 mild non-proliferative",
    "2 \u2014 moderate non-proliferative",
    "3 \u2014 severe non-proliferative",
    "4 \u2014 proliferative",
)
OVERRIDE_CHOICES = (
    ("refer", "Refer to an eye care professional"),
    ("rescreen", "Rescreen at the routine interval"),
    ("retake", "Retake the photographs"),
)
YES_NO = {"": None, "yes": True, "no": False}  # an OCT CI-DME answer on the sign-off form
EYE_STATUS = {"graded": "graded", "ungradable": "ungradable", "missing": "no photograph",
              "unresolved": "not counted: an eye label is in question"}  # fmt: skip


def desk() -> ReviewDesk:
    return context.review()


@bp.context_processor
def review_helpers() -> dict[str, Any]:
    return {
        "OUTCOMES": OUTCOMES,
        "ICDR": ICDR,
        "OVERRIDE_CHOICES": OVERRIDE_CHOICES,
        "EYE_STATUS": EYE_STATUS,
        "when": _when,
        "percent": _percent,
        "person": _person,
        "MEANINGS": MEANINGS,
    }


def _when(stamp: str | None) -> str:
    return f"{stamp[:10]} {stamp[11:16]} UTC" if stamp else ""


def _percent(value: float | None) -> str:
    return "\u2014" if value is None else f"{float(value) * 100:.0f} %"


def _person(name: str) -> str:
    parts = [p for p in (name or "").split("^") if p]
    if len(parts) > 1:
        return f"{parts[0]}, {' '.join(parts[1:])}"
    return parts[0] if parts else ""


@bp.get("")
@roles(Role.CLINICIAN)
def index() -> ResponseReturnValue:
    visits = desk().visits()
    audit_view(
        "review list",
        detail={
            "visits": len(visits),
            "waiting": sum(v.needs_review for v in visits),
            # the list shows each visit's patient: name who was shown, as the worklist does
            "patients": sorted({v.patient_id for v in visits if v.patient_id}),
        },
    )
    return render_template("review/index.html", visits=visits)


def _page(
    visit_key: str,
    status: int = 200,
    error: str = "",
    form: Any = None,
    error_title: str = "Not signed",
) -> tuple[str, int]:
    detail = desk().visit(visit_key)
    audit_view(
        "review visit",
        patient_id=detail.summary.patient_id,
        study_instance_uid=detail.study_instance_uid,
        sop_instance_uids=detail.sop_instance_uids,
        detail={"visit": visit_key},
    )
    html = render_template(
        "review/visit.html",
        v=detail,
        octs=context.review_oct().scans(visit_key),
        error=error,
        error_title=error_title,
        form=form or {},
    )
    return html, status


@bp.get("/<visit>")
@roles(Role.CLINICIAN)
def visit(visit: str) -> ResponseReturnValue:
    return _page(visit)


def _audit_image(what: str, visit: str, capture_id: int) -> None:
    """A photograph (or its heatmap) was served: 110103 naming its patient and image."""
    owner = desk().image_owner(visit, capture_id)
    audit_view(
        what,
        patient_id=owner["patient_id"],
        study_instance_uid=owner["study_instance_uid"],
        sop_instance_uids=[owner["sop_instance_uid"]] if owner["sop_instance_uid"] else [],
        detail={"visit": visit, "capture": capture_id},
    )


@bp.get("/<visit>/photo/<int:capture_id>")
@roles(Role.CLINICIAN)
def photo(visit: str, capture_id: int) -> ResponseReturnValue:
    jpeg = desk().photo_jpeg(visit, capture_id)  # 404 unless the photograph is this visit's
    _audit_image("review photo", visit, capture_id)
    return Response(jpeg, mimetype="image/jpeg")


@bp.get("/<visit>/heatmap/<int:capture_id>")
@roles(Role.CLINICIAN)
def heatmap(visit: str, capture_id: int) -> ResponseReturnValue:
    png = desk().heatmap_png(visit, capture_id)  # 404 unless the photograph is this visit's
    _audit_image("review heatmap", visit, capture_id)
    return Response(png, mimetype="image/png")


@bp.get("/<visit>/oct/<int:capture_id>/thickness.png")
@roles(Role.CLINICIAN)
def oct_map(visit: str, capture_id: int) -> ResponseReturnValue:
    """An OCT volume's thickness map with the ETDRS grid (404 for another visit's)."""
    png = context.review_oct().thickness_map_png(visit, capture_id)
    _audit_image("review oct thickness map", visit, capture_id)
    return Response(png, mimetype="image/png")


@bp.get("/<visit>/oct/<int:capture_id>/bscan/<int:frame>.png")
@roles(Role.CLINICIAN)
def oct_bscan(visit: str, capture_id: int, frame: int) -> ResponseReturnValue:
    """B-scan ``frame`` of an OCT volume with its layers and fluid (404 outside the volume)."""
    png = context.review_oct().bscan_png(visit, capture_id, frame)
    owner = desk().image_owner(visit, capture_id)
    audit_view(
        "review oct b-scan",
        patient_id=owner["patient_id"],
        study_instance_uid=owner["study_instance_uid"],
        sop_instance_uids=[owner["sop_instance_uid"]] if owner["sop_instance_uid"] else [],
        detail={"visit": visit, "capture": capture_id, "frame": frame},
    )
    return Response(png, mimetype="image/png")


@bp.post("/<visit>/sign")
@roles(Role.CLINICIAN)
def sign(visit: str) -> ResponseReturnValue:
    form = request.form
    grades: dict[str, int] = {}
    try:
        for eye in ("R", "L"):
            value = form.get(f"grade_{eye}", "").strip()
            if value:
                grades[eye] = int(value)
        shown = form.get("outcome_id", "").strip()
        oct_dme = {eye: YES_NO[form.get(f"oct_dme_{eye}", "")] for eye in ("R", "L")}
        choice = Decision(
            decision=form.get("decision", ""),
            outcome_code=form.get("outcome_code", "").strip(),
            reason=form.get("reason", ""),
            grades=grades,
            outcome_id=int(shown) if shown else None,
            oct_dme={eye: value for eye, value in oct_dme.items() if value is not None},
        )
    except KeyError:
        return _page(visit, 422, "The OCT macular oedema answer is yes or no.", form)
    except ValueError:
        return _page(visit, 422, "A DR grade is 0 (none) to 4 (proliferative).", form)
    try:
        signed = desk().sign(
            visit,
            choice,
            user_pk=current_user.user.id,
            username=current_user.username,
            address=request.remote_addr or "",
            password=form.get("password", ""),
        )
    except ApplianceError as exc:
        if exc.http_status == 404:
            raise
        if context.accounts().resume(session.get("sid", ""), touch=False) is None:
            session.clear()  # locked by wrong passwords: its sessions have ended
            flash(exc.message)
            return redirect(url_for("auth.login"), code=303)
        return _page(visit, exc.http_status, exc.message, form)
    jobs = f"{signed.queued} archive job(s) queued" if signed.queued else "stored"
    flash(f"Signed ({signed.meaning}): the verified SR and the signed PDF were issued ({jobs}).")
    return redirect(url_for("review.visit", visit=visit), code=303)


EYE_ACTIONS = {
    "keep_label": "the label kept",
    "use_detected": "the detected eye used",
    "relabel": "relabelled",
    "exclude": "excluded from the screening",
}


@bp.post("/<visit>/captures/<int:capture_id>/eye")
@roles(Role.CLINICIAN)
def eye(visit: str, capture_id: int) -> ResponseReturnValue:
    """A clinician decides a photograph's eye, as the station does (desks/eye_labels.py): the
    decision, its audit event, the outcome decided again and the documents due again."""
    desk().image_owner(visit, capture_id)  # 404 unless the photograph is this visit's
    action = request.form.get("action", "")
    try:
        decided = context.eye_labels().decide(
            capture_id,
            action,
            eye=request.form.get("eye", ""),
            reason=request.form.get("reason", ""),
            user=current_user.username,
            role=str(current_user.role),
            address=request.remote_addr or "",
        )
    except RejectedInput as exc:
        return _page(visit, exc.http_status, exc.message, error_title="Eye not decided")
    side = {"R": ": right eye", "L": ": left eye"}.get(decided.decision.eye or "", "")
    flash(
        f"Photograph {capture_id}: {EYE_ACTIONS.get(action, action)}{side}. The outcome was "
        f"decided again: {decided.outcome.text}"
    )
    return redirect(url_for("review.visit", visit=visit) + f"#photo-{capture_id}", code=303)


@bp.get("/<visit>/documents/<int:document_id>/report.pdf")
@roles(Role.CLINICIAN)
def document(visit: str, document_id: int) -> ResponseReturnValue:
    """One version of the visit's PDF report, to read or print (404 for another visit's)."""
    found = desk().document(visit, document_id)
    audit_view(
        "review report",
        patient_id=found.patient_id,
        study_instance_uid=found.study_instance_uid,
        sop_instance_uids=[found.sop_instance_uid],
        detail={"visit": visit, "document": document_id},
    )
    response = Response(found.pdf, mimetype="application/pdf")
    response.headers["Content-Disposition"] = f'inline; filename="report-{document_id}.pdf"'
    response.headers["Content-Security-Policy"] = "default-src 'none'; frame-ancestors 'none'"
    return response
