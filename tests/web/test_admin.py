"""Admin console with real services: outbox, C-ECHO, audit log, models, monitoring, users,
settings."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from pynetdicom import AE, evt
from pynetdicom.presentation import StoragePresentationContexts

from appliance.audit import Action, AuditEvent, EventID
from appliance.capture import Incoming
from appliance.capture.scp import TRANSFER_SYNTAXES
from appliance.config import Destination, Settings
from appliance.domain import Source
from appliance.service import Services
from tests.conftest import fundus, jpeg_bytes, op_bytes, wait_for
from tests.web_helpers import PASSWORD, add_user, csrf, logged_in, login
from web import create_app

ROOT = Path(__file__).resolve().parents[2]
VERIFICATION = "1.2.840.10008.1.1"


class Archive:
    """A pynetdicom archive answering C-ECHO, and C-STORE with scripted statuses, then 0."""

    def __init__(self, port: int, statuses: list[int]) -> None:
        self.port, self.statuses = port, list(statuses)
        self.stored: list[str] = []
        self._lock = threading.Lock()
        ae = AE(ae_title="ARCHIVE")
        ae.add_supported_context(VERIFICATION)
        for context in StoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, TRANSFER_SYNTAXES)
        self.server = ae.start_server(
            ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._on_store)]
        )

    def _on_store(self, event: Any) -> int:
        with self._lock:
            status = self.statuses.pop(0) if self.statuses else 0x0000
            if status == 0:
                self.stored.append(str(event.dataset.SOPInstanceUID))
            return status


@pytest.fixture
def archive_port() -> int:
    from tests.conftest import free_port

    return free_port()


@pytest.fixture
def settings(settings: Settings, archive_port: int) -> Settings:
    from tests.conftest import free_port

    return settings.replace(
        destinations=(
            Destination("pacs", "127.0.0.1", archive_port, "ARCHIVE", timeout=5),
            Destination("offline", "127.0.0.1", free_port(), "NOBODY", timeout=2),
        ),
        worklist_host="127.0.0.1",
        worklist_port=archive_port,
        worklist_ae_title="ARCHIVE",
        outbox_backoff_seconds=0.05,
        outbox_backoff_cap_seconds=0.2,
        monitoring_psi_min_photos=30,
    )


@pytest.fixture
def archive(archive_port: int) -> Iterator[Archive]:
    server = Archive(archive_port, [0xC000])  # the first object is refused for good
    yield server
    server.server.shutdown()


@pytest.fixture
def admin(app: Any, services: Services) -> Any:
    return logged_in(app, services, "admin", "ann")


def words(html: str) -> str:
    """What a fragment says: tags dropped, white space collapsed."""
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", html))).strip()


def text(response: Any) -> str:
    return words(response.get_data(as_text=True))


def cells(row: str) -> list[str]:
    return [words(cell) for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, flags=re.S)]


def notice(client: Any, path: str) -> str:
    html = client.get(path).get_data(as_text=True)
    found = re.search(r'id="admin-notice"[^>]*>(.*?)</p>', html, flags=re.S)
    assert found, "no notice on the page"
    return words(found.group(1))


def events(services: Services, event_id: str) -> list[dict[str, Any]]:
    rows = services.store.query(
        "SELECT * FROM audit_events WHERE event_id = ? ORDER BY seq", (event_id,)
    )
    return [{**r, "detail": json.loads(r["detail"])} for r in rows]


# -- every page --------------------------------------------------------------------------------
PAGES = [
    "/admin",
    "/admin/outbox",
    "/admin/audit",
    "/admin/models",
    "/admin/monitoring",
    "/admin/users",
    "/admin/settings",
]


@pytest.mark.parametrize("path", PAGES)
def test_every_page_renders_for_an_admin_without_inline_code(
    admin: Any, path: str, services: Services
) -> None:
    response = admin.get(path)
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "<script>" not in html and "style=" not in html  # CSP default-src 'self'
    assert not re.search(r"(src|href)=\"(https?:)?//", html)
    assert 'href="/static/admin.css"' in html and 'src="/static/admin.js"' in html
    assert 'aria-current="page"' in html
    for form in re.findall(r"<form[^>]*method=\"post\".*?</form>", html, flags=re.S):
        assert 'name="csrf_token"' in form, form[:120]


def test_operators_and_clinicians_may_not_open_the_console(app: Any, services: Services) -> None:
    for role in ("operator", "clinician"):
        client = logged_in(app, services, role)
        assert client.get("/admin/audit").status_code == 403
        token = csrf(client, "/")
        assert client.post("/admin/outbox/retry", data={"csrf_token": token}).status_code == 403


# -- outbox ------------------------------------------------------------------------------------
def test_outbox_counts_dead_letters_and_retry(
    admin: Any, services: Services, archive: Archive
) -> None:
    data = op_bytes(fundus(seed=3, size=(192, 256)))
    capture = services.ingestor.ingest(
        Incoming(data=data, source=Source.DICOM, user_id="ae:CAM", calling_ae="CAM")
    )
    dead = "SELECT count(*) FROM outbox_jobs WHERE destination = 'pacs' AND state = 'dead'"
    wait_for(lambda: services.store.scalar(dead) == 1, timeout=30)
    html = admin.get("/admin/outbox").get_data(as_text=True)
    row = re.search(r"<th scope=\"row\">pacs</th>(.*?)</tr>", html, flags=re.S)
    assert row, html
    assert re.search(r'data-state="dead"><span class="badge bad">.*?1</span>', row.group(1))
    assert 'data-state="delivered">0<' in row.group(1)
    assert "offline" in html  # a configured destination that is down is listed too
    assert capture.sop_instance_uid in html and "0xC000" in html  # the dead letter, its reason

    token = csrf(admin, "/admin/outbox")
    response = admin.post("/admin/outbox/retry", data={"csrf_token": token, "destination": "pacs"})
    assert response.status_code == 302
    assert notice(admin, "/admin/outbox").startswith("✔ Done: 1 dead-lettered job(s) for pacs")
    delivered = (
        "SELECT count(*) FROM outbox_jobs WHERE destination = 'pacs' AND state = 'delivered'"
    )
    wait_for(lambda: services.store.scalar(delivered) == 1, timeout=30)
    assert archive.stored == [capture.sop_instance_uid]
    retried = [e for e in events(services, "110104") if e["action"] == "U"]
    assert retried[-1]["user_id"] == "ann"
    assert retried[-1]["detail"] == {"requeued_dead_letters": 1, "destination": "pacs"}


def test_c_echo_says_success_and_failure_in_words(
    admin: Any, services: Services, archive: Archive
) -> None:
    html = admin.get("/admin/outbox").get_data(as_text=True)
    assert html.count("C-ECHO test") == 3  # pacs, offline and the worklist node
    token = csrf(admin, "/admin/outbox")
    for node in ("pacs", "worklist"):
        admin.post("/admin/outbox/echo", data={"csrf_token": token, "node": node})
        said = notice(admin, "/admin/outbox")
        assert said.startswith(f"✔ Done: C-ECHO to {node} (ARCHIVE at 127.0.0.1:")
        assert said.endswith("succeeded (status 0x0000)")
    admin.post("/admin/outbox/echo", data={"csrf_token": token, "node": "offline"})
    said = notice(admin, "/admin/outbox")
    assert said.startswith("✖ Not done: C-ECHO to offline failed: NOBODY at 127.0.0.1:")
    admin.post("/admin/outbox/echo", data={"csrf_token": token, "node": "../etc"})
    assert "is not a configured node" in notice(admin, "/admin/outbox")
    echoes = [e for e in events(services, "110100") if e["detail"].get("admin_action")]
    assert [(e["detail"]["node"], e["outcome"]) for e in echoes] == [
        ("pacs", 0),
        ("worklist", 0),
        ("offline", 4),
    ]
    assert all(e["user_id"] == "ann" for e in echoes)
    assert admin.get("/admin").status_code == 200  # still answering


# -- audit log ---------------------------------------------------------------------------------
def _rows(html: str) -> list[list[str]]:
    table = re.search(r'<table id="audit-events">.*?<tbody>(.*?)</tbody>', html, flags=re.S)
    assert table
    return [cells(row) for row in re.findall(r"<tr>(.*?)</tr>", table.group(1), flags=re.S)]


def test_audit_filters_paging_and_its_own_use_is_audited(admin: Any, services: Services) -> None:
    for i in range(60):
        services.audit.log(
            AuditEvent(
                event_id=EventID.INSTANCES_ACCESSED,
                action=Action.READ,
                user_id="carl" if i % 2 else "dora",
                patient_id=f"PAT{i % 3}",
            )
        )
    page = admin.get("/admin/audit?user=carl&event_id=110103&patient_id=PAT1")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert 'id="audit-filter"' in html
    rows = _rows(html)
    # carl is odd i, PAT1 is i % 3 == 1: i = 1, 7, 13, ... 55 → 10 events
    assert len(rows) == 10
    assert all(r[2].startswith("110103 DICOM Instances Accessed") for r in rows)
    assert all(r[5] == "carl" and r[7] == "PAT1" for r in rows)
    assert "10 events match the filter" in text(page)

    everything = admin.get("/admin/audit").get_data(as_text=True)
    assert len(_rows(everything)) == 50 and 'rel="next"' in everything
    older = admin.get("/admin/audit?page=2").get_data(as_text=True)
    assert _rows(older)[-1][0] == "1"  # the oldest entry, last on the last page

    today = datetime.now(UTC).date()
    future = (today + timedelta(days=1)).isoformat()
    assert _rows(admin.get(f"/admin/audit?date_from={future}").get_data(as_text=True)) == [
        ["No events."]
    ]
    assert len(_rows(admin.get(f"/admin/audit?date_to={today}&user=dora").get_data(True))) == 30
    bad = admin.get("/admin/audit?date_from=yesterday")
    assert "the 'from' date must look like 2026-11-29" in text(bad)

    views = events(services, "110101")
    assert views[0]["user_id"] == "ann" and views[0]["action"] == "R"
    assert views[0]["detail"]["filters"] == {
        "user": "carl",
        "patient_id": "PAT1",
        "event_id": "110103",
    }
    assert [v["detail"]["view"] for v in views] == ["audit_log"] * 6
    # the newest row on the first page is this very view
    newest = _rows(admin.get("/admin/audit").get_data(as_text=True))[0]
    assert newest[2].startswith("110101 Audit Log Used") and newest[5] == "ann"


def test_verify_chain_reports_ok_then_the_first_tampered_entry(
    admin: Any, services: Services, settings: Settings
) -> None:
    token = csrf(admin, "/admin/audit")
    ok = admin.post("/admin/audit/verify", data={"csrf_token": token})
    assert ok.status_code == 200 and "Chain OK: all" in text(ok)
    # someone with file access edits entry 2 (the triggers stop the application, not sqlite3)
    conn = sqlite3.connect(settings.data_path / "appliance.db")
    conn.execute("DROP TRIGGER audit_events_no_update")
    conn.execute("UPDATE audit_events SET user_id = 'someone-else' WHERE seq = 2")
    conn.commit()
    conn.close()
    broken = admin.post("/admin/audit/verify", data={"csrf_token": token})
    said = text(broken)
    assert "Chain BROKEN at entry 2: entry 2 was altered (hash mismatch)" in said
    assert 'role="alert"' in broken.get_data(as_text=True)
    checks = [e for e in events(services, "110101") if e["detail"]["view"] == "audit_verify"]
    assert [(c["detail"]["ok"], c["detail"]["first_bad"]) for c in checks] == [
        (True, None),
        (False, 2),
    ]


def test_export_downloads_the_whole_trail_as_jsonl_and_is_audited(
    admin: Any, services: Services
) -> None:
    token = csrf(admin, "/admin/audit")
    response = admin.post("/admin/audit/export", data={"csrf_token": token})
    assert response.status_code == 200
    assert response.mimetype == "application/x-ndjson"
    assert "attachment" in response.headers["Content-Disposition"]
    lines = [json.loads(line) for line in response.get_data(as_text=True).splitlines()]
    assert [e["seq"] for e in lines] == list(range(1, len(lines) + 1))
    assert lines[-1]["event_id"] == "110101" and lines[-1]["detail"]["view"] == "audit_export"
    assert lines[-1]["event_name"] == "Audit Log Used" and lines[-1]["user_id"] == "ann"
    assert services.audit.verify().ok


# -- models ------------------------------------------------------------------------------------
def test_models_page_without_models_says_none_installed(admin: Any) -> None:
    said = text(admin.get("/admin/models"))
    assert "none installed" in said and "no result pretends to grade" in said


def test_models_page_shows_the_shipped_cards_in_use(settings: Settings) -> None:
    services = Services(settings.replace(models_dir=str(ROOT / "models")))
    try:
        app = create_app(services.settings, services)
        said = text(logged_in(app, services, "admin").get("/admin/models"))
    finally:
        services.stop()
    cards = {p.name: json.loads(p.read_text()) for p in (ROOT / "models").glob("*.card.json")}
    assert "✔ installed" in said
    for card in cards.values():
        assert f"{card['name']} {card['version']} — {card['task']}" in said
        for entry in card["files"].values():
            assert entry["sha256"] in said
        for threshold in card["thresholds"].values():
            assert f"{threshold['value']:.4f}" in said and threshold["chosen_at"] in said
    assert said.count("Demonstration model, not clinically validated.") == len(cards)
    assert said.count("✔ yes variant int8 on ") == len(cards)
    dr = cards["dr.card.json"]["validation"]["referable_dr_sensitivity"]
    assert f"{dr['value']:.3f}" in said and f"{dr['numerator']}/{dr['denominator']}" in said


def test_models_page_says_why_models_were_refused(settings: Settings, tmp_path: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(ROOT / "models", models, ignore=shutil.ignore_patterns("validation", "recipe"))
    target = models / "glaucoma.int8.onnx"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    services = Services(settings.replace(models_dir=str(models)))
    try:
        app = create_app(services.settings, services)
        said = text(logged_in(app, services, "admin").get("/admin/models"))
    finally:
        services.stop()
    assert "✖ refused — model retina-glaucoma-demo int8: file glaucoma.int8.onnx does not " in said
    assert "not loaded" in said


# -- monitoring --------------------------------------------------------------------------------
def seed_photo(
    services: Services,
    day: str,
    *,
    brightness: float,
    focus: float = 0.65,
    gradable: bool = True,
    referable: bool | None = None,
    calling_ae: str | None = "CAM1",
    user: str = "ae:CAM1",
) -> int:
    """A capture with its quality report, result and receive event as the pipeline stores them
    (written directly so a test can choose the measurements and the day)."""
    stamp = f"{day}T10:00:00.000000+00:00"
    with services.store.write() as tx:
        n = tx.one("SELECT count(*) AS n FROM captures")["n"]  # type: ignore[index]
        pk = tx.insert(
            "captures",
            {
                "source": "dicom" if calling_ae else "upload",
                "media_type": "image/jpeg",
                "content_sha256": f"{n:064x}",
                "file_path": f"x/{n}.jpg",
                "size_bytes": 1,
                "calling_ae": calling_ae,
                "received_at": stamp,
                "status": "processed",
            },
        )
        tx.insert(
            "quality_reports",
            {
                "capture_pk": pk,
                "gradable": int(gradable),
                "score": 0.8,
                "reasons": "[]",
                "guidance": "[]",
                "created_at": stamp,
                "metrics": json.dumps({"brightness": brightness, "focus": focus}),
            },
        )
        finding = {
            "referable": referable,
            "dme": False if referable is not None else None,
            "glaucoma_suspect": None,
        }
        tx.insert(
            "results",
            {
                "capture_pk": pk,
                "kind": "screening",
                "created_at": stamp,
                "payload": json.dumps({"finding": finding}),
            },
        )
        services.audit.record(
            tx,
            AuditEvent(EventID.IMPORT, Action.CREATE, user, detail={"capture_id": pk}),
        )
    return pk


def test_monitoring_shows_rates_per_day_camera_operator_and_a_drift_alert(
    admin: Any, services: Services
) -> None:
    today = datetime.now(UTC).date()
    yesterday = (today - timedelta(days=1)).isoformat()
    for i in range(40):  # far brighter than anything in the validation reference
        seed_photo(
            services,
            today.isoformat(),
            brightness=200.0 + i % 5,
            gradable=i % 4 != 0,
            referable=i % 3 == 0,
        )
    for _ in range(10):
        seed_photo(services, yesterday, brightness=95.0, calling_ae=None, user="olga")
    page = admin.get("/admin/monitoring")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    said = text(page)
    assert html.count('<svg class="chart"') == 7  # volume, 2 rates, 2 drifts, 2 histograms
    assert 'role="img"' in html and "<desc id=" in html
    assert "Drift alert." in said
    latest = r"\(all photographs, last 7 days\): PSI \d+\.\d{3} ≥ 0\.25 over 50 photographs"
    assert re.search("Brightness has drifted from the validation reference " + latest, said)
    assert "Brightness has drifted from the validation reference (camera CAM1 (DICOM))" in said
    # the per-day table: today 40 photographs, 10 ungradable (25.0%), 30 graded, 10 referable
    day_row = re.search(rf"<th scope=\"row\">{today}</th>(.*?)</tr>", html, flags=re.S)
    assert day_row
    found = cells(day_row.group(1))
    assert found[:6] == ["40", "40", "10 (25.0%)", "30", "10", "33.3%"]
    assert "drifted" in found[6]  # brightness PSI over the last 7 days
    camera = re.search(r'<table id="by-camera">.*?</table>', html, flags=re.S)
    operator = re.search(r'<table id="by-operator">.*?</table>', html, flags=re.S)
    assert camera and operator
    assert "CAM1 (DICOM)" in camera.group(0) and "web upload" in camera.group(0)
    assert "ae:CAM1" in operator.group(0) and "olga" in operator.group(0)
    # too few photographs for olga's own PSI
    assert "too few photographs (10)" in operator.group(0)
    # one operator's daily series
    mine = text(admin.get("/admin/monitoring?operator=olga"))
    assert "Per day — operator olga" in mine
    assert admin.get("/admin").get_data(as_text=True).count("Brightness has drifted") == 3


def test_monitoring_counts_a_real_upload_for_its_operator(
    app: Any, admin: Any, services: Services
) -> None:
    add_user(services, "olga", "operator")
    capture = services.ingest_upload(
        jpeg_bytes(fundus(seed=5, size=(384, 512))),
        {"laterality": "R"},
        user_id="olga",
        address="127.0.0.1",
    )
    processed = "SELECT status FROM captures WHERE id = ?"
    wait_for(lambda: services.store.scalar(processed, (capture.id,)) == "processed", timeout=30)
    html = admin.get("/admin/monitoring").get_data(as_text=True)
    operator = re.search(r'<table id="by-operator">.*?</table>', html, flags=re.S)
    assert operator and re.search(
        r'<th scope="row">olga</th><td class="num">1</td>', operator.group(0)
    )
    assert "No drift alert" in text(admin.get("/admin/monitoring"))


# -- users -------------------------------------------------------------------------------------
def _user_id(services: Services, name: str) -> int:
    return next(u.id for u in services.accounts.list() if u.username == name)


def test_users_add_change_role_disable_enable_and_reset(
    app: Any, admin: Any, services: Services
) -> None:
    token = csrf(admin, "/admin/users")
    response = admin.post(
        "/admin/users",
        data={"csrf_token": token, "username": "nina", "role": "operator", "password": PASSWORD},
    )
    assert response.status_code == 302
    assert notice(admin, "/admin/users") == "✔ Done: User nina added with the role operator."
    nina = _user_id(services, "nina")
    nina_client = app.test_client()
    assert login(nina_client, "nina").status_code == 302

    admin.post(f"/admin/users/{nina}/role", data={"csrf_token": token, "role": "clinician"})
    assert notice(admin, "/admin/users") == "✔ Done: nina now has the role clinician."
    assert services.accounts.get(nina).role == "clinician"  # type: ignore[union-attr]

    admin.post(f"/admin/users/{nina}/active", data={"csrf_token": token, "active": "0"})
    assert "nina is disabled; their sessions have ended" in notice(admin, "/admin/users")
    assert nina_client.get("/review").status_code == 302  # her session is over
    assert login(app.test_client(), "nina").status_code == 401
    assert "✖ disabled" in text(admin.get("/admin/users"))

    admin.post(f"/admin/users/{nina}/active", data={"csrf_token": token, "active": "1"})
    assert "nina is enabled (and unlocked)" in notice(admin, "/admin/users")
    admin.post(
        f"/admin/users/{nina}/password",
        data={"csrf_token": token, "password": "another long password"},
    )
    assert "password of nina is reset" in notice(admin, "/admin/users")
    assert login(app.test_client(), "nina").status_code == 401
    assert login(app.test_client(), "nina", "another long password").status_code == 302

    changes = [e["detail"]["change"] for e in events(services, "110113") if e["user_id"] == "ann"]
    assert changes == [
        "user_added",
        "role_changed",
        "user_disabled",
        "user_enabled",
        "password_set",
    ]


def test_user_changes_that_accounts_refuse_are_said_in_words(
    admin: Any, services: Services
) -> None:
    token = csrf(admin, "/admin/users")
    ann = _user_id(services, "ann")
    admin.post(f"/admin/users/{ann}/active", data={"csrf_token": token, "active": "0"})
    assert notice(admin, "/admin/users") == (
        "✖ Not done: this is the last active admin: add another admin first."
    )
    admin.post(f"/admin/users/{ann}/role", data={"csrf_token": token, "role": "operator"})
    assert "last active admin" in notice(admin, "/admin/users")
    admin.post(
        "/admin/users",
        data={"csrf_token": token, "username": "ann", "role": "admin", "password": PASSWORD},
    )
    assert notice(admin, "/admin/users") == "✖ Not done: the user 'ann' already exists."
    admin.post(
        "/admin/users",
        data={"csrf_token": token, "username": "x y", "role": "admin", "password": "short"},
    )
    assert "a user name starts with a letter" in notice(admin, "/admin/users")
    admin.post(f"/admin/users/{ann}/password", data={"csrf_token": token, "password": "short"})
    assert "at least 10 characters" in notice(admin, "/admin/users")
    assert services.accounts.get(ann).active  # type: ignore[union-attr]


def test_a_locked_account_can_be_unlocked(app: Any, admin: Any, services: Services) -> None:
    add_user(services, "lars", "operator")
    for _ in range(5):
        login(app.test_client(), "lars", "wrong password!")
    assert "⚠ locked until" in text(admin.get("/admin/users"))
    token = csrf(admin, "/admin/users")
    admin.post(
        f"/admin/users/{_user_id(services, 'lars')}/active",
        data={"csrf_token": token, "active": "1"},
    )
    assert login(app.test_client(), "lars").status_code == 302


# -- settings ----------------------------------------------------------------------------------
def test_settings_page_masks_secrets(admin: Any, settings: Settings) -> None:
    html = admin.get("/admin/settings").get_data(as_text=True)
    assert settings.api_token and settings.api_token not in html
    assert re.search(r"<code>api_token</code></th><td>•••••• \(set\)", html)
    assert "primary-care-dr-screening@" in html  # the guideline rules in use
    assert "ARCHIVE@127.0.0.1:" in html  # the worklist node


def test_settings_validation_errors_are_words_and_nothing_is_saved(
    admin: Any, services: Services, settings: Settings
) -> None:
    token = csrf(admin, "/admin/settings")
    cases = {
        "web_port = ": "not valid TOML",
        "web_prot = 8081": "unknown setting 'web_prot'",
        'web_port = "eighty"': "setting 'web_port': cannot use 'eighty' as int",
        'data_dir = "/tmp"': "data_dir cannot be set here",
        'web_tls_cert = "/nowhere.pem"': "web_tls_cert and web_tls_key go together",
        'outcome_rules = "/no/rules.toml"': "outcome_rules: /no/rules.toml: cannot read",
        "[[destinations]]\nname = 'x'\nkind = 'dimse'": "destinations[0]: missing host",
    }
    for pasted, expected in cases.items():
        response = admin.post(
            "/admin/settings", data={"csrf_token": token, "toml": pasted, "action": "save"}
        )
        assert response.status_code == 422, pasted
        said = text(response)
        assert "Not valid — nothing was saved." in said and expected in said, (pasted, said)
    assert not (settings.data_path / "settings.toml").exists()
    assert not [
        e for e in events(services, "110113") if e["detail"].get("change", "") == "settings_saved"
    ]


def test_valid_settings_are_saved_for_the_next_start_and_audited(
    admin: Any, services: Services, settings: Settings
) -> None:
    from appliance import config

    token = csrf(admin, "/admin/settings")
    pasted = (
        'station_name = "EYE-CLINIC-2"\nmonitoring_psi_alert = 0.2\napi_token = "s3cret-token-x"\n'
    )
    checked = admin.post(
        "/admin/settings", data={"csrf_token": token, "toml": pasted, "action": "check"}
    )
    assert checked.status_code == 200 and "Valid. Nothing is saved" in text(checked)
    assert not (settings.data_path / "settings.toml").exists()
    saved = admin.post(
        "/admin/settings", data={"csrf_token": token, "toml": pasted, "action": "save"}
    )
    said = text(saved)
    assert "Valid and saved. Restart the appliance to apply" in said
    assert "station_name STATION1 EYE-CLINIC-2" in said  # what changes at the next start
    assert "api_token •••••• (set) •••••• (set)" in said
    changes = re.search(r'<table id="settings-changes">.*?</table>', saved.get_data(True), re.S)
    assert changes and "s3cret" not in changes.group(0)
    file = settings.data_path / "settings.toml"
    assert file.read_text() == pasted and (file.stat().st_mode & 0o777) == 0o600
    assert "waiting for a restart" in text(admin.get("/admin/settings"))
    assert services.settings.station_name == "STATION1"  # the running appliance is unchanged
    event = [
        e for e in events(services, "110113") if e["detail"].get("change") == "settings_saved"
    ][0]
    assert event["user_id"] == "ann" and event["event_type"] == "110131"
    assert event["detail"]["settings"] == ["api_token", "monitoring_psi_alert", "station_name"]
    assert "s3cret" not in json.dumps(event)
    # the next start reads it: after the config file, before the environment
    again = config.load(
        environ={"APPLIANCE_MONITORING_PSI_ALERT": "0.3"}, data_dir=settings.data_dir
    )
    assert (again.station_name, again.api_token, again.monitoring_psi_alert) == (
        "EYE-CLINIC-2",
        "s3cret-token-x",
        0.3,
    )

    admin.post("/admin/settings/remove", data={"csrf_token": token})
    assert "Nothing removed" in notice(admin, "/admin/settings")
    admin.post("/admin/settings/remove", data={"csrf_token": token, "confirm": "yes"})
    assert "saved settings file is removed" in notice(admin, "/admin/settings")
    assert not file.exists()
    assert config.load(environ={}, data_dir=settings.data_dir).station_name == "STATION1"


def test_outbox_shows_storage_commitment_counts(settings: Settings) -> None:
    from dataclasses import replace

    committing = replace(settings.destinations[1], storage_commitment=True)
    services = Services(settings.replace(destinations=(settings.destinations[0], committing)))
    try:
        now = datetime.now(UTC).isoformat()
        with services.store.write() as tx:
            for n, mark in enumerate(("committed", "committed", "requested", "failed")):
                tx.insert(
                    "outbox_jobs",
                    {
                        "kind": "op",
                        "destination": "offline",
                        "sop_instance_uid": f"2.25.{n + 1}",
                        "file_path": "x",
                        "state": "delivered" if mark != "failed" else "queued",
                        "next_attempt_at": now,
                        "created_at": now,
                        "updated_at": now,
                        "commitment": mark,
                    },
                )
        app = create_app(services.settings, services)
        said = text(logged_in(app, services, "admin").get("/admin/outbox"))
    finally:
        services.stop()
    assert "Storage commitment: 2 committed, 1 awaiting the archive's answer" in said
    assert "1 not committed (sent again)" in said
    assert said.count("Storage commitment:") == 1  # only the destination that asked for it
