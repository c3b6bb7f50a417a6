"""``create_app(settings, services)``: the Flask application factory."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import Flask, jsonify, render_template, request
from flask.typing import ResponseReturnValue
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from appliance import __version__
from appliance.config import Settings
from appliance.errors import ApplianceError
from web import auth

if TYPE_CHECKING:
    from appliance.runtime.services import Services

PLAIN = {
    400: "The request could not be used.",
    401: "Please log in first.",
    403: "Your account's role may not open this page.",
    404: "There is no such page.",
    413: "The file is too large.",
    429: "Too many attempts. Wait a minute, then try again.",
}


def create_app(settings: Settings, services: Services) -> Flask:
    app = Flask(__name__)
    https = bool(settings.web_tls_cert and settings.web_tls_key)
    app.config.update(
        SECRET_KEY=services.web_secret(),
        SETTINGS=settings,
        MAX_CONTENT_LENGTH=settings.upload_max_bytes,
        SESSION_COOKIE_NAME="appliance_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=https,
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the (server-side) session
        RATELIMIT_HEADERS_ENABLED=False,
    )
    app.extensions["services"] = services

    auth.login_manager.init_app(app)
    auth.login_manager.session_protection = None  # the server-side session is the authority
    auth.csrf.init_app(app)
    app.before_request(auth.guard)

    from web.admin import bp as admin_bp
    from web.api import bp as api_bp
    from web.review import bp as review_bp
    from web.station import bp as station_bp
    from web.station_history import bp as station_history_bp

    for blueprint in (auth.bp, api_bp, station_bp, station_history_bp, review_bp, admin_bp):
        app.register_blueprint(blueprint)
    auth.rate_limit_logins(app)

    @app.context_processor
    def page_globals() -> dict[str, Any]:
        return {
            "version": __version__,
            "idle_seconds": settings.web_idle_logoff_minutes * 60,
            "station_name": settings.station_name,
            "model_status": services.model_status,
        }

    _errors(app)
    app.after_request(_security_headers)
    return app


def _errors(app: Flask) -> None:
    """Errors as JSON for API clients, else as a page in words."""

    def error_page(status: int, code: str, message: str) -> ResponseReturnValue:
        if auth.wants_json() or request.accept_mimetypes.best == "application/json":
            return jsonify(error=code, message=message), status
        return render_template("error.html", status=status, message=message), status

    @app.errorhandler(ApplianceError)
    def appliance_error(exc: ApplianceError) -> ResponseReturnValue:
        return error_page(exc.http_status, exc.reason, exc.message)

    @app.errorhandler(CSRFError)
    def csrf_error(exc: CSRFError) -> ResponseReturnValue:
        message = "The form was not sent from this page or has expired: reload and try again."
        return error_page(400, "csrf_failed", message)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> ResponseReturnValue:
        status = exc.code or 500
        code = exc.name.lower().replace(" ", "_")
        if auth.wants_json():
            return jsonify(error=code, message=exc.description), status
        return error_page(status, code, PLAIN.get(status, exc.description or exc.name))


def _security_headers(response: Any) -> ResponseReturnValue:
    response.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; "
        "object-src 'none'",
    )
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    if request.endpoint == "static":
        response.headers.setdefault("Cache-Control", "no-store")
    else:  # PHI never lands in a browser cache: overrides send_file's "no-cache" (exports)
        response.headers["Cache-Control"] = "no-store"
    if request.is_secure:
        response.headers.setdefault(
            "Strict-Transport-Security", "max-age=31536000; includeSubDomains"
        )
    return response
