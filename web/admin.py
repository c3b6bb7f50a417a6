"""Admin console: outbox, audit log, models, monitoring, users, settings."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, render_template

from appliance.accounts import Role
from web.auth import roles, services

bp = Blueprint("admin", __name__, url_prefix="/admin")


@bp.get("")
@roles(Role.ADMIN)
def index() -> Any:
    return render_template("admin/index.html", health=services().health())
