"""Camera station (operators, clinicians): choose the patient, take photos, see verdicts live."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, render_template

from appliance.accounts import Role
from web.auth import roles

bp = Blueprint("station", __name__, url_prefix="/station")
STATION = (Role.OPERATOR, Role.CLINICIAN)


@bp.get("")
@roles(*STATION)
def index() -> Any:
    return render_template("station/index.html")
