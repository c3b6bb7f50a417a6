"""Login and safeguards: authorisation matrix, sessions, idle logoff, CSRF, lockout, headers."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from appliance.config import Settings
from appliance.runtime.services import Services
from tests.web_helpers import PASSWORD, ROLES, add_user, csrf, csrf_from, logged_in, login
from web import create_app

# Who may open what. Every route must be classified here: a new route that is not fails
# test_every_route_is_classified, so nobody adds a page without deciding who may see it.
PUBLIC = {"/login", "/logout", "/healthz", "/metrics"}
ANY_USER = {"/"}
BY_PREFIX = (
    ("/api/captures", {"operator", "clinician"}),  # or an API token
    ("/api/station", {"operator", "clinician"}),
    ("/api/review", {"clinician"}),
    ("/api/admin", {"admin"}),
    ("/station", {"operator", "clinician"}),
    ("/review", {"clinician"}),
    ("/admin", {"admin"}),
)


def allowed_roles(rule: str) -> set[str] | None:
    if rule in ANY_USER:
        return set(ROLES)
    for prefix, allowed in BY_PREFIX:
        if rule == prefix or rule.startswith(prefix + "/") or rule.startswith(prefix + "<"):
            return allowed
    return None


def concrete(rule: Any) -> str:
    path = str(rule.rule)
    return re.sub(r"<(?:(\w+):)?(\w+)>", lambda m: "1" if m.group(1) == "int" else "x", path)


def routes(app: Any) -> list[tuple[str, str, str]]:
    out = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            out.append((str(rule.rule), concrete(rule), method))
    return out


def test_every_route_is_classified(app: Any) -> None:
    unclassified = [
        rule for rule, _, _ in routes(app) if rule not in PUBLIC and allowed_roles(rule) is None
    ]
    assert not unclassified, f"classify these routes in test_auth.py: {unclassified}"


def _call(client: Any, path: str, method: str, token: str | None) -> Any:
    if method == "GET":
        return client.get(path)
    return client.open(path, method=method, data={"csrf_token": token or ""})


def test_every_route_for_every_role_and_anonymous(app: Any, services: Services) -> None:
    clients = {role: logged_in(app, services, role) for role in ROLES}
    tokens = {role: csrf(c, "/") for role, c in clients.items()}
    for rule, path, method in routes(app):
        if rule in PUBLIC:
            continue
        allowed = allowed_roles(rule)
        assert allowed is not None
        anonymous = _call(app.test_client(), path, method, None)
        if path.startswith("/api/") or method != "GET":
            assert anonymous.status_code in (400, 401), (rule, method, anonymous.status_code)
        else:
            assert anonymous.status_code == 302, (rule, method)
            assert anonymous.headers["Location"].startswith("/login"), rule
        for role, client in clients.items():
            response = _call(client, path, method, tokens[role])
            if role in allowed:
                assert response.status_code not in (401, 403), (rule, method, role)
                assert not response.headers.get("Location", "").startswith("/login"), rule
            else:
                assert response.status_code == 403, (rule, method, role, response.status_code)


def test_login_renews_the_session_and_logout_kills_the_old_cookie(
    app: Any, services: Services
) -> None:
    add_user(services, "olga", "operator")
    client = app.test_client()
    client.get("/login")
    before = client.get_cookie("appliance_session")
    assert login(client, "olga").status_code == 302
    after = client.get_cookie("appliance_session")
    assert before is not None and after is not None and before.value != after.value
    assert after.http_only and after.same_site == "Lax"
    assert client.get("/station").status_code == 200

    stolen = after.value
    token = csrf(client, "/station")
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302
    assert client.get("/station").status_code == 302

    replay = app.test_client()
    replay.set_cookie("appliance_session", stolen)
    response = replay.get("/station")
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")
    ended = services.store.one("SELECT end_reason FROM web_sessions ORDER BY id DESC LIMIT 1")
    assert ended == {"end_reason": "logout"}


def test_idle_sessions_are_ended_on_the_server(app: Any, services: Services) -> None:
    client = logged_in(app, services, "operator")
    long_ago = (datetime.now(UTC) - timedelta(minutes=16)).isoformat(timespec="milliseconds")
    with services.store.write() as tx:
        tx.execute("UPDATE web_sessions SET last_seen_at = ?", (long_ago,))
    response = client.get("/station")
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")
    assert "session ended" in client.get("/login").get_data(as_text=True)
    row = services.store.one("SELECT end_reason, ended_at FROM web_sessions")
    assert row is not None and row["end_reason"] == "idle" and row["ended_at"]
    # ...and the cookie stays dead even if the clock is wound back
    with services.store.write() as tx:
        tx.execute("UPDATE web_sessions SET last_seen_at = ?", (datetime.now(UTC).isoformat(),))
    assert client.get("/station").status_code == 302
    logouts = services.store.query(
        "SELECT detail FROM audit_events WHERE event_id = '110114' AND event_type = '110123'"
    )
    assert [json.loads(r["detail"])["reason"] for r in logouts] == ["idle"]


def test_the_page_reloads_itself_when_the_idle_time_is_up(app: Any, services: Services) -> None:
    client = logged_in(app, services, "operator")
    html = client.get("/station").get_data(as_text=True)
    assert '<meta http-equiv="refresh" content="905">' in html


def test_state_changing_requests_without_a_csrf_token_are_refused(
    app: Any, services: Services
) -> None:
    client = logged_in(app, services, "operator")
    assert client.post("/logout").status_code == 400
    assert client.post("/api/captures", data={}).status_code == 400
    forged = client.post("/api/captures", data={}, headers={"X-CSRFToken": "forged"})
    assert forged.status_code == 400
    token = csrf(client, "/station")
    response = client.post("/api/captures", data={}, headers={"X-CSRFToken": token})
    assert response.status_code == 422  # past CSRF: now it is the missing file
    assert client.post("/login", data={"username": "x", "password": "y"}).status_code == 400


def test_a_wrong_password_is_audited_and_locks_the_account(app: Any, services: Services) -> None:
    add_user(services, "carl", "clinician")
    client = app.test_client()
    for _ in range(5):
        response = login(client, "carl", "not the password")
        assert response.status_code == 401
        assert "user name or password is wrong" in response.get_data(as_text=True)
    # locked now: even the right password is refused, with the same words
    assert login(client, "carl").status_code == 401
    failures = services.store.query(
        "SELECT user_id, outcome, detail FROM audit_events WHERE event_id = '110114' "
        "AND outcome = 4 ORDER BY seq"
    )
    causes = [json.loads(r["detail"])["cause"] for r in failures]
    assert causes == ["wrong_password"] * 5 + ["locked"]
    assert all(r["user_id"] == "carl" for r in failures)
    assert "locked_until" in json.loads(failures[4]["detail"])
    # an admin's unlock (set active) clears it
    carl = next(u for u in services.accounts.list() if u.username == "carl")
    services.accounts.set_active(carl.id, True, actor="test")
    assert login(client, "carl").status_code == 302


def test_an_unknown_name_is_refused_and_never_written_down(app: Any, services: Services) -> None:
    response = login(app.test_client(), "hunter2-typed-in-the-name-field", "x")
    assert response.status_code == 401
    row = services.store.one(
        "SELECT user_id, detail FROM audit_events WHERE event_id = '110114' AND outcome = 4"
    )
    assert row is not None and row["user_id"] == "unknown"
    assert "hunter2" not in row["detail"]


def test_logins_are_rate_limited_per_address(settings: Settings, services: Services) -> None:
    from dataclasses import replace

    app = create_app(replace(settings, web_login_rate_limit="3 per minute"), services)
    client = app.test_client()
    token = csrf_from(client.get("/login").get_data(as_text=True))
    codes = [
        client.post(
            "/login", data={"username": "nobody", "password": "x", "csrf_token": token}
        ).status_code
        for _ in range(5)
    ]
    assert codes == [401, 401, 401, 429, 429]


def test_security_headers_and_no_cdn(app: Any, services: Services) -> None:
    client = app.test_client()
    response = client.get("/login")
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "Strict-Transport-Security" not in response.headers  # plain HTTP here
    https = client.get("/login", base_url="https://localhost")
    assert "max-age" in https.headers["Strict-Transport-Security"]
    html = response.get_data(as_text=True)
    assert not re.search(r"(src|href)=\"(https?:)?//", html)
    assert "<script>" not in html and "style=" not in html  # CSP: no inline code or styles


def test_next_never_leaves_the_appliance(app: Any, services: Services) -> None:
    add_user(services, "ann", "admin")
    client = app.test_client()
    token = csrf_from(client.get("/login").get_data(as_text=True))
    response = client.post(
        "/login?next=//evil.example/x",
        data={"username": "ann", "password": PASSWORD, "csrf_token": token},
    )
    assert response.headers["Location"] == "/admin"


def test_the_last_admin_cannot_be_disabled_or_demoted(services: Services) -> None:
    from appliance.errors import RejectedInput

    admin = add_user(services, "root1", "admin")
    with pytest.raises(RejectedInput, match="last active admin"):
        services.accounts.set_active(admin.id, False, actor="test")
    with pytest.raises(RejectedInput, match="last active admin"):
        services.accounts.set_role(admin.id, "operator", actor="test")


def test_passwords_are_argon2id_and_short_ones_refused(services: Services) -> None:
    from appliance.errors import RejectedInput

    add_user(services, "dora", "operator")
    stored = services.store.scalar("SELECT password_hash FROM users WHERE username = 'dora'")
    assert str(stored).startswith("$argon2id$") and PASSWORD not in str(stored)
    with pytest.raises(RejectedInput, match="at least"):
        services.accounts.add("eve", "operator", "short", actor="test")


def test_users_add_reads_the_password_from_stdin(tmp_path: Path) -> None:
    env = {**os.environ, "APPLIANCE_DATA_DIR": str(tmp_path / "data")}
    cli = [sys.executable, "-m", "appliance.cli", "users"]
    done = subprocess.run(
        [*cli, "add", "firstadmin", "--role", "admin"],
        input=PASSWORD + "\n",
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    again = subprocess.run(
        [*cli, "add", "firstadmin", "--role", "admin"],
        input=PASSWORD + "\n",
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert again.returncode == 2 and "already exists" in again.stderr
    listed = subprocess.run(
        [*cli, "list", "--json"], capture_output=True, text=True, env=env, check=True
    )
    assert json.loads(listed.stdout)[0] == {
        "username": "firstadmin",
        "role": "admin",
        "active": True,
        "locked_until": None,
        "last_login_at": None,
        "full_name": "",
        "credentials": "",
    }
    assert PASSWORD not in (tmp_path / "data" / "appliance.db").read_bytes().decode("latin-1")
