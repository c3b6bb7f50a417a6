"""Login, logout, sessions, and who may open what.

Every view is denied unless it is marked: ``@public`` (login page, health, metrics),
``@roles(...)`` (the roles that may open it) or ``@own_access`` (the view checks a token or a
role itself). The guard runs before every request, so a view nobody marked answers 403.
Sessions live in the database (``Accounts``): the browser's signed cookie only carries the
session token, so logout and idle logoff are enforced on the server.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.typing import ResponseReturnValue
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager, UserMixin, current_user, login_user, logout_user
from flask_wtf.csrf import CSRFProtect

from appliance.audit import EventID, events
from appliance.desks.accounts import LoginRefused, Role, Session
from web import context

bp = Blueprint("auth", __name__)
login_manager = LoginManager()
csrf = CSRFProtect()

F = TypeVar("F", bound=Callable[..., Any])
MAX_USERNAME = 64  # longer than any valid user name (appliance/desks/accounts.py USERNAME)
HOME = {Role.OPERATOR: "station.index", Role.CLINICIAN: "review.index", Role.ADMIN: "admin.index"}


class WebUser(UserMixin):
    def __init__(self, web_session: Session) -> None:
        self.session = web_session
        self.user = web_session.user

    def get_id(self) -> str:
        return str(self.user.id)

    @property
    def username(self) -> str:
        return self.user.username

    @property
    def role(self) -> Role:
        return self.user.role


# -- access marks ------------------------------------------------------------------------------
def public(view: F) -> F:
    view._access = "public"  # type: ignore[attr-defined]
    return view


def own_access(view: F) -> F:
    """The view authorises the request itself (e.g. an API token or a session)."""
    view._access = "view"  # type: ignore[attr-defined]
    return view


def roles(*allowed: Role) -> Callable[[F], F]:
    def mark(view: F) -> F:
        view._access = frozenset(allowed)  # type: ignore[attr-defined]
        return view

    return mark


def passive(view: F) -> F:
    """Background refreshes: they do not count as activity, so idle logoff still happens."""
    view._passive = True  # type: ignore[attr-defined]
    return view


def _view() -> Callable[..., object] | None:
    return current_app.view_functions.get(request.endpoint or "")


def guard() -> ResponseReturnValue | None:
    """Runs before every request: deny by default."""
    if request.endpoint is None or request.endpoint == "static":
        return None
    access = getattr(_view(), "_access", None)
    if access in ("public", "view"):
        return None
    if access is None:  # a view nobody marked: refuse rather than guess
        abort(403)
    if not current_user.is_authenticated:
        return login_manager.unauthorized()
    if current_user.role not in access:
        deny(f"{current_user.role} may not open {request.endpoint}")
    return None


def deny(why: str) -> None:
    user = current_user.username if current_user.is_authenticated else "anonymous"
    who = events.Who(user, request.remote_addr or "")
    context.accounts().record_access(events.access_denied(who, path=request.path, why=why))
    abort(403)


def require(*allowed: Role) -> WebUser:
    """For ``@own_access`` views: a logged-in user with one of ``allowed``, else 401/403."""
    if not current_user.is_authenticated:
        abort(401)
    if current_user.role not in allowed:
        deny(f"{current_user.role} may not open {request.endpoint}")
    user: WebUser = current_user._get_current_object()
    return user


def audit_view(
    what: str,
    *,
    patient_id: str = "",
    study_instance_uid: str = "",
    sop_instance_uids: Iterable[str] = (),
    detail: dict[str, Any] | None = None,
    event_id: EventID = EventID.INSTANCES_ACCESSED,
) -> None:
    """Record that the current user was shown PHI (110103) or the audit log (110101)."""
    who = events.Who(current_user.username, request.remote_addr or "")
    about = events.About(patient_id, study_instance_uid, tuple(sop_instance_uids))
    event = events.viewed(event_id, who, about, what=what, path=request.path, detail=detail)
    context.accounts().record_access(event)


# -- Flask-Login wiring ------------------------------------------------------------------------
@login_manager.user_loader
def load_user(user_id: str) -> WebUser | None:
    token = session.get("sid", "")
    live = context.accounts().resume(token, touch=not getattr(_view(), "_passive", False))
    if live is None or str(live.user.id) != user_id:
        g.session_ended = bool(token)
        session.clear()
        return None
    return WebUser(live)


@login_manager.unauthorized_handler
def unauthorized() -> ResponseReturnValue:
    if request.path.startswith("/api/") or request.accept_mimetypes.best == "application/json":
        return jsonify(error="login_required", message="log in first"), 401
    if g.get("session_ended"):
        flash("Your session ended (logged off after inactivity or elsewhere). Please log in.")
    return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))


def _safe_next(target: str | None) -> str | None:
    """A path on this appliance, else None. Browsers read ``/\\evil`` as ``//evil`` and drop
    tabs and newlines inside a URL, so a backslash, any control character or whitespace, or a
    second leading slash refuses the target."""
    if not target or not target.startswith("/") or target[1:2] in ("/", "\\"):
        return None
    if "\\" in target or any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in target):
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return None
    return target


def home_for(role: Role) -> str:
    return url_for(HOME[role])


# -- views -------------------------------------------------------------------------------------
def rate_limit_logins(app: Any) -> Limiter:
    """Per client address, in this process (each app gets its own counters)."""
    limiter = Limiter(get_remote_address, app=app, storage_uri="memory://", default_limits=[])
    limit = str(app.config["SETTINGS"].web_login_rate_limit)
    endpoint = "auth.login"
    app.view_functions[endpoint] = limiter.limit(limit, methods=["POST"])(
        app.view_functions[endpoint]
    )
    return limiter


@bp.route("/login", methods=["GET", "POST"])
@public
def login() -> ResponseReturnValue:
    if request.method == "GET":
        if current_user.is_authenticated:
            return redirect(home_for(current_user.role))
        first_run = context.accounts().count() == 0
        return render_template("login.html", first_run=first_run)
    username = request.form.get("username", "").strip()[:MAX_USERNAME]
    password = request.form.get("password", "")
    address = request.remote_addr or ""
    try:
        user, token = context.accounts().login(username, password, address=address)
    except LoginRefused as exc:
        return render_template("login.html", error=exc.message, username=username), 401
    # A new session: nothing from before login survives (no session fixation), and a session
    # this browser still held (someone else at the same station) ends on the server too.
    earlier = session.get("sid", "")
    if earlier:
        context.accounts().end(earlier, "superseded", address=address)
    session.clear()
    session["sid"] = token
    live = context.accounts().resume(token)
    assert live is not None
    login_user(WebUser(live))
    return redirect(_safe_next(request.args.get("next")) or home_for(user.role))


@bp.post("/logout")
@public
def logout() -> ResponseReturnValue:
    token = session.get("sid", "")
    if token:
        context.accounts().end(token, "logout", address=request.remote_addr or "")
    logout_user()
    session.clear()
    flash("You are logged out.")
    return redirect(url_for("auth.login"))


@bp.get("/")
@roles(Role.OPERATOR, Role.CLINICIAN, Role.ADMIN)
def index() -> ResponseReturnValue:
    return redirect(home_for(current_user.role))


def wants_json() -> bool:
    return request.path.startswith("/api/") or request.path in ("/healthz", "/metrics")
