"""Regression tests from the web security review: object scope at the station, open redirects,
login timing and bounds, superseded sessions, PHI-view audit of the outbox's dead letters."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from appliance.capture import Incoming
from appliance.desks.accounts import MAX_PASSWORD
from appliance.domain import Source
from appliance.errors import RejectedInput
from appliance.runtime.services import Services
from tests.conftest import fundus, jpeg_bytes, wait_for
from tests.web.test_station import SMALL, fragment, upload, walk_in
from tests.web_helpers import PASSWORD, add_user, csrf, csrf_from, logged_in, login


def _ingest(services: Services, patient: str, seed: int) -> int:
    capture = services.ingestor.ingest(
        Incoming(
            data=jpeg_bytes(fundus(seed=seed, size=SMALL)),
            source=Source.UPLOAD,
            user_id="t",
            fields={"patient_id": patient, "patient_name": "Other^Pat", "laterality": "R"},
        )
    )
    return int(capture.id)


def _fake_report(services: Services, visit_key: str, uid: str) -> int:
    """A report row of some visit (its file is never read when the row is refused)."""
    with services.store.write() as tx:
        return int(
            tx.insert(
                "derived_objects",
                {
                    "visit_key": visit_key,
                    "kind": "pdf",
                    "sop_class_uid": "1.2.840.10008.5.1.4.1.1.104.1",
                    "sop_instance_uid": uid,
                    "series_instance_uid": uid + ".1",
                    "study_instance_uid": uid + ".2",
                    "file_path": "ab/missing.dcm",
                    "created_at": datetime.now(UTC).isoformat(),
                },
            )
        )


# -- the station shows the chosen patient's objects only ---------------------------------------
def test_station_serves_no_other_patients_thumbnail_or_report(app: Any, services: Services) -> None:
    other = _ingest(services, "OTHER-1", seed=41)
    other_report = _fake_report(services, "study:424242", "1.2.3.999.1")
    client = logged_in(app, services, "operator")

    # nobody chosen: nothing at all is served
    assert client.get(f"/station/captures/{other}/thumbnail.jpg").status_code == 404
    assert client.get(f"/station/reports/{other_report}/report.pdf").status_code == 404

    walk_in(client)
    page = client.get("/station").get_data(as_text=True)
    assert upload(client, page, jpeg_bytes(fundus(seed=42, size=SMALL)), "R").status_code == 201
    mine = int(
        wait_for(
            lambda: services.store.scalar(
                "SELECT c.id FROM captures c JOIN patients p ON p.id = c.patient_pk "
                "WHERE p.patient_id = 'WALK-1'"
            )
        )
    )
    wait_for(lambda: f'id="capture-{mine}"' in fragment(client))
    assert client.get(f"/station/captures/{mine}/thumbnail.jpg").status_code == 200

    # another patient's photograph and report, by id: not found, and nothing shown is audited
    assert client.get(f"/station/captures/{other}/thumbnail.jpg").status_code == 404
    for path in ("report.pdf", "download"):
        assert client.get(f"/station/reports/{other_report}/{path}").status_code == 404
    shown = [
        json.loads(r["detail"])
        for r in services.audit.rows()
        if r["event_id"] == "110103" and r["patient_id"] == "OTHER-1"
    ]
    assert not [d for d in shown if d.get("view", "").startswith("station")]

    # after "next patient" the previous patient's photograph is gone from the station too
    client.post("/station/finish", data={"csrf_token": csrf(client, "/station")})
    assert client.get(f"/station/captures/{mine}/thumbnail.jpg").status_code == 404


def test_loading_a_thumbnail_does_not_keep_a_session_alive(app: Any, services: Services) -> None:
    client = logged_in(app, services, "operator")
    walk_in(client)
    page = client.get("/station").get_data(as_text=True)
    assert upload(client, page, jpeg_bytes(fundus(seed=43, size=SMALL)), "L").status_code == 201
    mine = int(wait_for(lambda: services.store.scalar("SELECT id FROM captures")))
    idle = (datetime.now(UTC) - timedelta(minutes=10)).isoformat(timespec="milliseconds")
    with services.store.write() as tx:
        tx.execute("UPDATE web_sessions SET last_seen_at = ?", (idle,))
    assert client.get(f"/station/captures/{mine}/thumbnail.jpg").status_code == 200
    assert services.store.scalar("SELECT last_seen_at FROM web_sessions") == idle


# -- redirects after login ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "target",
    [
        "/\\evil.example/x",
        "\\\\evil.example",
        "/\t/evil.example",
        "/\n/evil.example",
        "/ /evil.example",
        "https://evil.example/",
        "//evil.example",
        "evil.example",
    ],
)
def test_next_refuses_every_way_off_the_appliance(
    app: Any, services: Services, target: str
) -> None:
    add_user(services, "nina", "clinician")
    client = app.test_client()
    token = csrf_from(client.get("/login").get_data(as_text=True))
    response = client.post(
        "/login",
        query_string={"next": target},
        data={"username": "nina", "password": PASSWORD, "csrf_token": token},
    )
    assert response.status_code == 302
    assert response.headers["Location"] == "/review", target


def test_next_keeps_a_path_on_the_appliance(app: Any, services: Services) -> None:
    add_user(services, "nora", "clinician")
    client = app.test_client()
    token = csrf_from(client.get("/login").get_data(as_text=True))
    response = client.post(
        "/login",
        query_string={"next": "/station?x=1"},
        data={"username": "nora", "password": PASSWORD, "csrf_token": token},
    )
    assert response.headers["Location"] == "/station?x=1"


# -- login: timing, bounds, superseded sessions ------------------------------------------------
def test_every_refused_login_costs_one_password_check(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unknown, disabled and locked accounts must not answer faster than a wrong password."""
    from appliance.desks.accounts import LoginRefused

    add_user(services, "dis1", "operator")
    add_user(services, "lock1", "operator")
    add_user(services, "adm1", "admin")
    accounts = services.accounts
    disabled = next(u for u in accounts.list() if u.username == "dis1")
    accounts.set_active(disabled.id, False, actor="test")
    until = (datetime.now(UTC) + timedelta(minutes=10)).isoformat()
    with services.store.write() as tx:
        tx.execute("UPDATE users SET locked_until = ? WHERE username = 'lock1'", (until,))
    calls: list[str] = []
    real = accounts._verify

    def counted(hashed: str, password: str) -> bool:
        calls.append(hashed)
        return real(hashed, password)

    monkeypatch.setattr(accounts, "_verify", counted)
    for name in ("nobody", "dis1", "lock1", "adm1"):
        calls.clear()
        with pytest.raises(LoginRefused):
            accounts.login(name, PASSWORD if name != "adm1" else "wrong password", address="")
        assert len(calls) == 1, name


def test_passwords_are_bounded(app: Any, services: Services) -> None:
    with pytest.raises(RejectedInput, match="at most"):
        services.accounts.add("long1", "operator", "x" * (MAX_PASSWORD + 1), actor="test")
    add_user(services, "olaf", "operator")
    response = login(app.test_client(), "olaf", "y" * 200_000)
    assert response.status_code == 401
    row = services.store.one(
        "SELECT user_id, detail FROM audit_events WHERE event_id = '110114' AND outcome = 4"
    )
    assert row is not None and row["user_id"] == "olaf"
    assert json.loads(row["detail"])["cause"] == "wrong_password"


def test_logging_in_over_a_live_session_ends_it_on_the_server(app: Any, services: Services) -> None:
    add_user(services, "first1", "operator")
    add_user(services, "second1", "clinician")
    client = logged_in(app, services, "operator", "first1")
    earlier = client.get_cookie("appliance_session")
    assert earlier is not None
    token = csrf(client, "/station")
    response = client.post(
        "/login", data={"username": "second1", "password": PASSWORD, "csrf_token": token}
    )
    assert response.status_code == 302
    rows = services.store.query("SELECT end_reason FROM web_sessions ORDER BY id")
    assert [r["end_reason"] for r in rows] == ["superseded", None]
    replay = app.test_client()
    replay.set_cookie("appliance_session", earlier.value)
    assert replay.get("/station").status_code == 302


# -- the admin's outbox page shows dead letters: audited -----------------------------------------
def test_dead_letters_shown_to_an_admin_are_audited(app: Any, services: Services) -> None:
    from appliance.outbox import queue

    with services.store.write() as tx:
        queue.enqueue(
            tx,
            kind="op",
            destination="pacs",
            sop_instance_uid="1.2.3.4.5",
            file_path="ab/x.dcm",
            study="1.2.3.4",
        )
        tx.execute("UPDATE outbox_jobs SET state = 'dead', last_error = 'refused'")
    client = logged_in(app, services, "admin")
    html = client.get("/admin/outbox").get_data(as_text=True)
    assert "1.2.3.4.5" in html
    [event] = [
        r
        for r in services.audit.rows()
        if r["event_id"] == "110103" and "admin_outbox_dead_letters" in r["detail"]
    ]
    assert event["user_id"] == "admin1" and json.loads(event["sop_instance_uids"]) == ["1.2.3.4.5"]
    assert json.loads(event["detail"])["studies"] == ["1.2.3.4"]


def test_downloads_with_phi_are_never_stored_by_the_browser(app: Any, services: Services) -> None:
    client = logged_in(app, services, "admin")
    export = client.post("/admin/audit/export", data={"csrf_token": csrf(client, "/admin")})
    assert export.status_code == 200
    assert export.headers["Cache-Control"] == "no-store"
