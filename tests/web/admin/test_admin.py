"""Admin console with real services: every page, outbox and C-ECHO, audit log, models."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from appliance.audit import Action, AuditEvent, EventID
from appliance.capture import Incoming
from appliance.config import Settings
from appliance.domain import Source
from appliance.runtime.services import Services
from tests.admin_helpers import ROOT, Archive, cells, events, notice, text
from tests.conftest import fundus, op_bytes, wait_for
from tests.web_helpers import csrf, logged_in
from web import create_app

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
    assert all(r[3].startswith("110103 DICOM Instances Accessed") for r in rows)
    assert all(r[6] == "carl" and r[8] == "PAT1" for r in rows)
    assert all(
        r[2] == "carl: DICOM Instances Accessed read for patient PAT1 — succeeded." for r in rows
    )
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
    assert newest[3].startswith("110101 Audit Log Used") and newest[6] == "ann"
    assert newest[2].startswith("ann opened the audit log. Technical details {")


def test_audit_events_read_as_sentences_naming_the_patient(admin: Any, services: Services) -> None:
    from appliance.audit import events as audit_events
    from appliance.store import utcnow

    with services.store.write() as tx:
        tx.insert(
            "patients",
            {"patient_id": "12345", "patient_name": "Doe^Jane", "created_at": utcnow()},
        )
    services.audit.log(
        audit_events.review_signed(
            audit_events.Who("dr.smith"),
            audit_events.About("12345"),
            {"meaning": "reviewed and approved", "outcome": "rescreen"},
        )
    )
    services.audit.log(AuditEvent(event_id=EventID.EXPORT, action=Action.EXECUTE, user_id="x"))
    html = admin.get("/admin/audit").get_data(as_text=True)
    said = [row[2] for row in _rows(html)]
    assert said[1].startswith("x: Export executed — succeeded.")  # no phrasing: generic
    assert said[2].startswith(
        "dr.smith signed the report for patient 12345 (Jane Doe) — reviewed and approved "
        "(outcome: rescreen). Technical details {"
    )
    assert 'data-kind="review_signed"' in html and '<details class="detail">' in html
    # the page view itself stays audited (110101), the stored detail untouched
    assert events(services, "110101")[-1]["detail"]["view"] == "audit_log"
    signed = [e for e in events(services, "110103") if e["detail"].get("stage") == "review"]
    assert signed[0]["detail"] == {
        "stage": "review",
        "meaning": "reviewed and approved",
        "outcome": "rescreen",
    }


@pytest.mark.parametrize(
    ("query", "found"),
    [
        ("date_to=9999-12-31", True),
        ("date_from=0001-01-01", True),
        ("date_from=0001-01-01&date_to=9999-12-31", True),
        ("date_from=9999-12-31", False),
        ("date_to=0001-01-01", False),
    ],
)
def test_audit_dates_at_the_ends_of_the_calendar(
    admin: Any, services: Services, query: str, found: bool
) -> None:
    page = admin.get(f"/admin/audit?{query}")
    assert page.status_code == 200
    rows = _rows(page.get_data(as_text=True))
    assert (rows != [["No events."]]) is found
    assert admin.get("/healthz").status_code == 200


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
