"""``create_app(settings, services)``: the Flask application factory."""

from __future__ import annotations

from typing import Any

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from appliance.config import Settings
from appliance.errors import ApplianceError


def create_app(settings: Settings, services: Any) -> Flask:
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.upload_max_bytes
    app.config["SETTINGS"] = settings
    app.extensions["services"] = services

    from web.api import bp as api_bp

    app.register_blueprint(api_bp)

    @app.errorhandler(ApplianceError)
    def appliance_error(exc: ApplianceError) -> Any:
        return jsonify(error=exc.reason, message=exc.message), exc.http_status

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        return jsonify(error=exc.name.lower().replace(" ", "_"), message=exc.description), exc.code

    @app.after_request
    def security_headers(response: Any) -> Any:
        response.headers.setdefault(
            "Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'"
        )
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    return app
