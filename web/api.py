"""JSON API: health, metrics and uploads (an API token, or a logged-in station user)."""

from __future__ import annotations

import hmac
from typing import Any

from flask import Blueprint, current_app, jsonify, request
from flask.typing import ResponseReturnValue
from flask_login import current_user
from werkzeug.exceptions import RequestEntityTooLarge

from appliance.desks.accounts import Role
from appliance.errors import NotAuthorised, OtherPatientsPhotograph, RejectedInput, TooLarge
from web import context
from web.auth import csrf, own_access, public, require

bp = Blueprint("api", __name__)
FORM_FIELDS = ("patient_id", "patient_name", "birth_date", "sex", "laterality", "issuer")


@bp.get("/metrics")
@public
def metrics() -> ResponseReturnValue:
    """Prometheus exposition: counts and latencies only, no PHI."""
    body = context.services().metrics.exposition()
    return current_app.response_class(
        body, mimetype=None, content_type=context.services().metrics_content_type
    )


@bp.get("/healthz")
@public
def healthz() -> ResponseReturnValue:
    return jsonify(context.services().health())


def _authorise() -> str:
    """A camera workflow's bearer token, or a station user's session (then CSRF applies)."""
    if not request.headers.get("Authorization") and current_user.is_authenticated:
        user = require(Role.OPERATOR, Role.CLINICIAN)
        csrf.protect()
        return user.username
    token = current_app.config["SETTINGS"].api_token
    if not token:
        raise NotAuthorised(
            "uploads are disabled: no API token is configured (set APPLIANCE_API_TOKEN)",
            reason="uploads_disabled",
        )
    header = request.headers.get("Authorization", "")
    given = header[7:] if header.startswith("Bearer ") else ""
    if not given or not hmac.compare_digest(given.encode(), token.encode()):
        raise NotAuthorised("a valid API token is required")
    return "api-token"


def _too_large() -> TooLarge:
    """Which limit a 413 from the form parser is about: the whole upload, or one text field
    (werkzeug keeps form fields other than files in memory, up to max_form_memory_size)."""
    limit = request.max_content_length
    field_limit = request.max_form_memory_size
    if request.content_length is None:  # chunked: which one cannot be told
        return TooLarge(
            f"the upload is over the {limit}-byte limit, or one of its form fields over the "
            f"{field_limit}-byte limit for form fields"
        )
    if limit is not None and request.content_length > limit:
        return TooLarge(f"the upload is over the {limit}-byte limit")
    return TooLarge(
        f"a form field is over the {field_limit}-byte limit for form fields; send the image "
        "as the multipart file part named 'file'"
    )


@bp.post("/api/captures")
@own_access
@csrf.exempt
def upload() -> ResponseReturnValue:
    services = context.services()
    address = request.remote_addr or ""
    try:
        user = _authorise()
    except NotAuthorised as exc:
        services.refuse_upload(exc, user_id="anonymous", address=address)
        raise
    try:
        upload = request.files.get("file")
    except RequestEntityTooLarge:
        too_large = _too_large()
        services.refuse_upload(too_large, user_id=user, address=address)
        raise too_large from None
    if upload is None:
        missing = RejectedInput(
            "send the image as a multipart form field named 'file'", reason="no_file"
        )
        services.refuse_upload(missing, user_id=user, address=address)
        raise missing
    fields = {key: request.form[key] for key in request.form}
    try:
        capture = services.ingest_upload(upload.read(), fields, user_id=user, address=address)
    except OtherPatientsPhotograph as exc:  # 409; the other patient named only to whom may see
        message = exc.naming() if _may_see_other_patients() else exc.message
        return jsonify(error=exc.reason, message=message, capture=exc.capture_id), 409
    body: dict[str, Any] = {
        "id": capture.id,
        "sha256": capture.content_sha256,
        "media_type": capture.media_type,
        "duplicate": capture.duplicate,
    }
    if capture.duplicate:  # already received: for this same patient (said, with the capture)
        body["patient_id"] = capture.patient.patient_id
        body["message"] = (
            f"already received for patient {capture.patient.patient_id} (capture {capture.id})"
            if capture.patient.patient_id
            else f"already received (capture {capture.id})"
        )
    return jsonify(body), 200 if capture.duplicate else 201


def _may_see_other_patients() -> bool:
    """Clinicians review every patient's visits; an operator sees only the patient chosen at
    the station, and a token-holding script nobody's."""
    return bool(current_user.is_authenticated and current_user.role == Role.CLINICIAN)
