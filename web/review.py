"""Clinician review: what the model saw, its grades, accept or override (a VERIFIED SR)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, render_template

from appliance.accounts import Role
from web.auth import roles

bp = Blueprint("review", __name__, url_prefix="/review")


@bp.get("")
@roles(Role.CLINICIAN)
def index() -> Any:
    return render_template("review/index.html")
