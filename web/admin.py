"""Admin console: outbox, audit log, models, monitoring, users, settings.

Every page is for the admin role only. Actions are POST forms with a CSRF token; their result
is said in words on the next page (``notice``). The queries and the audited actions live in the
core (``appliance.desks.admin``, ``appliance.desks.monitoring``,
``appliance.desks.site_settings``): this module only reads the request, calls them and renders.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, redirect, render_template, request, send_file, session, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user

from appliance.audit import EventID, VerifyResult
from appliance.desks import admin as admin_desk
from appliance.desks import monitoring, site_settings
from appliance.desks.accounts import Role
from appliance.errors import RejectedInput
from web import admin_charts, context
from web.auth import audit_view, roles

bp = Blueprint("admin", __name__, url_prefix="/admin")
PER_PAGE = 50
SECTIONS = (
    ("admin.index", "Overview"),
    ("admin.outbox", "Outbox"),
    ("admin.audit", "Audit log"),
    ("admin.models", "Models"),
    ("admin.monitoring_page", "Monitoring"),
    ("admin.users", "Users"),
    ("admin.settings_page", "Settings"),
)


@bp.context_processor
def admin_globals() -> dict[str, Any]:
    return {"sections": SECTIONS, "notice": session.pop("admin_notice", None)}


def notice(text: str, ok: bool = True) -> None:
    """Said on the next page: "Done" or "Not done", in words and with an icon."""
    session["admin_notice"] = {"text": text, "ok": ok}


def _who() -> dict[str, str]:
    return {"user": current_user.username, "address": request.remote_addr or ""}


# -- overview ----------------------------------------------------------------------------------
@bp.get("")
@roles(Role.ADMIN)
def index() -> ResponseReturnValue:
    outbox = context.admin().outbox_overview()
    report, problem = context.monitoring().report()
    return render_template(
        "admin/index.html",
        health=context.services().health(),
        outbox=outbox,
        dead=sum(d.counts["dead"] for d in outbox),
        alerts=report.alerts if report else [],
        monitoring_problem=problem,
        users=context.accounts().list(),
        saved=context.site_settings().saved(),
    )


# -- outbox ------------------------------------------------------------------------------------
@bp.get("/outbox")
@roles(Role.ADMIN)
def outbox() -> ResponseReturnValue:
    desk = context.admin()
    dead = desk.dead_letters()
    documents = desk.dead_documents()
    if documents:  # they name visits and their studies: a view of PHI (110103)
        audit_view(
            "admin_documents_dead_letters",
            detail={
                "dead_documents": len(documents),
                "studies": sorted(
                    {d["study_instance_uid"] for d in documents if d["study_instance_uid"]}
                ),
            },
        )
    if dead:  # the dead letters name patients' studies and images: a view of PHI (110103)
        audit_view(
            "admin_outbox_dead_letters",
            sop_instance_uids=sorted({j["sop_instance_uid"] for j in dead}),
            detail={
                "dead_letters": len(dead),
                "studies": sorted(
                    {j["study_instance_uid"] for j in dead if j["study_instance_uid"]}
                ),
            },
        )
    return render_template(
        "admin/outbox.html",
        destinations=desk.outbox_overview(),
        dead=dead,
        documents=documents,
        nodes=desk.echo_nodes(),
        states=admin_desk.STATES,
    )


@bp.post("/outbox/retry")
@roles(Role.ADMIN)
def outbox_retry() -> ResponseReturnValue:
    destination = request.form.get("destination", "").strip() or None
    count = context.admin().retry_dead(destination, **_who())
    where = f" for {destination}" if destination else ""
    notice(f"{count} dead-lettered job(s){where} queued again; the forwarder retries them now.")
    return redirect(url_for("admin.outbox"))


@bp.post("/outbox/documents/retry")
@roles(Role.ADMIN)
def documents_retry() -> ResponseReturnValue:
    chosen = request.form.get("document", "").strip()
    document = int(chosen) if chosen.isdigit() else None
    count = context.admin().retry_documents(document, **_who())
    notice(f"{count} result document(s) due again; the pipeline builds them now.")
    return redirect(url_for("admin.outbox"))


@bp.post("/outbox/echo")
@roles(Role.ADMIN)
def outbox_echo() -> ResponseReturnValue:
    result = context.admin().echo_test(request.form.get("node", "").strip(), **_who())
    notice(result.words, result.ok)
    return redirect(url_for("admin.outbox"))


# -- audit log ---------------------------------------------------------------------------------
def _audit_filter() -> admin_desk.AuditFilter:
    args = request.args if request.method == "GET" else request.form
    return admin_desk.AuditFilter(
        user=args.get("user", "").strip(),
        patient_id=args.get("patient_id", "").strip(),
        event_id=args.get("event_id", "").strip(),
        date_from=args.get("date_from", "").strip(),
        date_to=args.get("date_to", "").strip(),
    )


def _audit_page(verify: VerifyResult | None = None) -> ResponseReturnValue:
    found = _audit_filter()
    try:
        page = max(1, int(request.args.get("page", "1")))
    except ValueError:
        page = 1
    if verify is None:
        audit_view(
            "audit_log",
            event_id=EventID.AUDIT_LOG_USED,
            detail={"filters": found.active(), "page": page},
        )
    result = context.admin().search_audit(found, page, PER_PAGE)
    return render_template(
        "admin/audit.html",
        result=result,
        filters=found,
        events=admin_desk.event_choices(),
        verify=verify,
    )


@bp.get("/audit")
@roles(Role.ADMIN)
def audit() -> ResponseReturnValue:
    return _audit_page()


@bp.post("/audit/verify")
@roles(Role.ADMIN)
def audit_verify() -> ResponseReturnValue:
    result = context.admin().verify_audit()
    audit_view(
        "audit_verify",
        event_id=EventID.AUDIT_LOG_USED,
        detail={"ok": result.ok, "checked": result.checked, "first_bad": result.first_bad_seq},
    )
    return _audit_page(verify=result)


@bp.post("/audit/export")
@roles(Role.ADMIN)
def audit_export() -> ResponseReturnValue:
    audit_view("audit_export", event_id=EventID.AUDIT_LOG_USED, detail={"format": "jsonl"})
    spool = tempfile.TemporaryFile()  # closed by the response once sent
    text = io.TextIOWrapper(spool, encoding="utf-8", newline="")
    context.admin().export_audit(text)
    text.flush()
    text.detach()
    spool.seek(0)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return send_file(
        spool,
        mimetype="application/x-ndjson",
        as_attachment=True,
        download_name=f"audit-{context.services().settings.station_name}-{stamp}.jsonl",
    )


# -- models ------------------------------------------------------------------------------------
@bp.get("/models")
@roles(Role.ADMIN)
def models() -> ResponseReturnValue:
    svc = context.services()
    return render_template(
        "admin/models.html",
        cards=context.admin().model_cards(),
        status=svc.model_status,
        oct_fluid=svc.oct_fluid_status,
        settings=svc.settings,
        cameras=context.admin().cameras(),
    )


# -- monitoring --------------------------------------------------------------------------------
def _charts(report: monitoring.Report) -> dict[str, Any]:
    labels = [d.label for d in report.days]
    short = [label[5:] for label in labels]
    span = f"from {report.start} to {report.end} (UTC)"
    table = "; the table below lists every number"
    charts: dict[str, Any] = {
        "volume": admin_charts.bars(
            "Photographs per day",
            labels,
            [d.photos for d in report.days],
            desc=f"Photographs received per day {span}{table}.",
            short=short,
        ),
        "ungradable": admin_charts.line(
            "Ungradable rate per day",
            labels,
            [d.ungradable_rate for d in report.days],
            desc=f"Share of assessed photographs found ungradable, per day {span}{table}.",
            percent=True,
            short=short,
        ),
        "referral": admin_charts.line(
            "Referral rate per day",
            labels,
            [d.referral_rate for d in report.days],
            desc=f"Share of graded photographs with a referable finding, per day {span}{table}.",
            percent=True,
            short=short,
        ),
        "drift": [],
        "histograms": [],
    }
    for name, metric in report.reference.metrics.items():
        charts["drift"].append(
            admin_charts.line(
                f"Drift of {metric.label.split(':')[0].lower()} (PSI)",
                labels,
                [d.drift[name].value for d in report.days],
                desc=(
                    f"Population stability index of {metric.label} against the validation "
                    f"reference, each day over the last {report.window_days} days {span}; "
                    f"dashed line: alert at {report.alert_at:g}{table}."
                ),
                threshold=report.alert_at,
                threshold_label=f"alert at PSI {report.alert_at:g}",
                short=short,
            )
        )
    for hist in report.histograms:
        bins = _bin_labels(hist.edges)
        charts["histograms"].append(
            (
                hist,
                bins,
                admin_charts.histogram(
                    f"{hist.label}: distribution",
                    bins,
                    hist.expected,
                    hist.actual,
                    desc=(
                        f"Share of photographs in each reference decile bin of {hist.label}: "
                        f"validation reference against this period ({hist.n} photographs)"
                        f"{table}."
                    ),
                ),
            )
        )
    return charts


def _bin_labels(edges: tuple[float, ...]) -> list[str]:
    out = [f"below {edges[0]:.3g}"]
    out += [f"{low:.3g} to {high:.3g}" for low, high in zip(edges, edges[1:], strict=False)]
    return out + [f"{edges[-1]:.3g} or more"]


@bp.get("/monitoring")
@roles(Role.ADMIN)
def monitoring_page() -> ResponseReturnValue:
    camera = request.args.get("camera", "").strip() or None
    operator = request.args.get("operator", "").strip() or None
    report, problem = context.monitoring().report(camera=camera, operator=operator)
    octs = context.monitoring_oct().report()  # OCT volumes, apart from the photographs
    return render_template(
        "admin/monitoring.html",
        report=report,
        problem=problem,
        charts=_charts(report) if report else None,
        octs=octs,
        oct_charts=admin_charts.oct_charts(octs),
    )


# -- users -------------------------------------------------------------------------------------
@bp.get("/users")
@roles(Role.ADMIN)
def users() -> ResponseReturnValue:
    return render_template(
        "admin/users.html",
        users=context.accounts().list(),
        roles=[r.value for r in Role],
        now=datetime.now(UTC).isoformat(),
    )


def _user_action(done: str, action: Callable[[], object]) -> ResponseReturnValue:
    try:
        action()
    except RejectedInput as exc:
        notice(f"{exc.message}.", ok=False)
    else:
        notice(done)
    return redirect(url_for("admin.users"))


def _named(user_id: int) -> str:
    user = context.accounts().get(user_id)
    return user.username if user else f"user {user_id}"


@bp.post("/users")
@roles(Role.ADMIN)
def users_add() -> ResponseReturnValue:
    form = request.form
    name, role = form.get("username", "").strip(), form.get("role", "")
    return _user_action(
        f"User {name} added with the role {role}.",
        lambda: context.accounts().add(
            name,
            role,
            form.get("password", ""),
            actor=current_user.username,
            full_name=form.get("full_name", ""),
            credentials=form.get("credentials", ""),
        ),
    )


@bp.post("/users/<int:user_id>/profile")
@roles(Role.ADMIN)
def users_profile(user_id: int) -> ResponseReturnValue:
    """The full name and credentials a user's signature prints (needed to sign)."""
    form = request.form
    full_name, credentials = form.get("full_name", ""), form.get("credentials", "")
    return _user_action(
        f"The name and credentials of {_named(user_id)} are set.",
        lambda: context.accounts().set_profile(
            user_id, full_name, credentials, actor=current_user.username
        ),
    )


@bp.post("/users/<int:user_id>/role")
@roles(Role.ADMIN)
def users_role(user_id: int) -> ResponseReturnValue:
    role = request.form.get("role", "")
    return _user_action(
        f"{_named(user_id)} now has the role {role}.",
        lambda: context.accounts().set_role(user_id, role, actor=current_user.username),
    )


@bp.post("/users/<int:user_id>/active")
@roles(Role.ADMIN)
def users_active(user_id: int) -> ResponseReturnValue:
    wanted = request.form.get("active", "")
    if wanted not in ("0", "1"):
        notice("Say whether to enable or disable the account.", ok=False)
        return redirect(url_for("admin.users"))
    active = wanted == "1"
    done = (
        f"{_named(user_id)} is enabled (and unlocked)."
        if active
        else f"{_named(user_id)} is disabled; their sessions have ended."
    )
    return _user_action(
        done,
        lambda: context.accounts().set_active(user_id, active, actor=current_user.username),
    )


@bp.post("/users/<int:user_id>/password")
@roles(Role.ADMIN)
def users_password(user_id: int) -> ResponseReturnValue:
    password = request.form.get("password", "")
    return _user_action(
        f"The password of {_named(user_id)} is reset; their sessions have ended.",
        lambda: context.accounts().set_password(user_id, password, actor=current_user.username),
    )


# -- settings ----------------------------------------------------------------------------------
def _settings_page(
    pasted: str = "", check: site_settings.Check | None = None, saved_now: bool = False
) -> str:
    desk = context.site_settings()
    pasted, secrets_left_out = site_settings.without_secrets(pasted)
    return render_template(
        "admin/settings.html",
        secrets_left_out=secrets_left_out,
        settings=desk.effective(),
        destinations=desk.destinations(),
        worklist=context.admin().echo_nodes().get("worklist"),
        rules=context.services().rules,
        saved=desk.saved(),
        pasted=pasted,
        check=check,
        saved_now=saved_now,
        restart=site_settings.RESTART,
    )


@bp.get("/settings")
@roles(Role.ADMIN)
def settings_page() -> ResponseReturnValue:
    return _settings_page()


@bp.post("/settings")
@roles(Role.ADMIN)
def settings_check() -> ResponseReturnValue:
    """Pasted TOML: checked, or checked and merged into the saved file."""
    desk = context.site_settings()
    text = request.form.get("toml", "")
    if request.form.get("action") == "save":
        result = desk.save(text, **_who())
        saved_now = result.ok
    else:
        result, saved_now = desk.check_paste(text), False
    page = _settings_page(text, result, saved_now)
    return page, (200 if result.ok else 422)


def _edited() -> dict[str, str]:
    """The settings whose field differs from the value the page was drawn with (``was.*``);
    a field without one (not drawn by the page) counts as edited and is checked by name."""
    form = request.form

    def typed(text: str | None) -> str | None:
        return None if text is None else text.replace("\r\n", "\n")

    return {
        key.removeprefix("set."): value.replace("\r\n", "\n")
        for key, value in form.items()
        if key.startswith("set.") and typed(value) != typed(form.get("was." + key[4:]))
    }


@bp.post("/settings/edit")
@roles(Role.ADMIN)
def settings_edit() -> ResponseReturnValue:
    """Settings edited one by one: only those changed are merged into the saved file."""
    result = context.site_settings().edit(_edited(), **_who())
    page = _settings_page(check=result, saved_now=bool(result.edited))
    return page, (200 if result.ok else 422)


@bp.post("/settings/remove")
@roles(Role.ADMIN)
def settings_remove() -> ResponseReturnValue:
    if request.form.get("confirm") != "yes":
        notice("Nothing removed: confirm the removal.", ok=False)
    elif context.site_settings().remove(**_who()):
        notice("The saved settings file is removed. Restart the appliance to apply.")
    else:
        notice("There is no saved settings file.", ok=False)
    return redirect(url_for("admin.settings_page"))
