"""Exactly-once result documents: what a visit owes survives a crash at every step.

The process "dies" at a chosen step (``Pipeline.step_hook`` raises a ``BaseException`` there, so
nothing after it runs and an open transaction rolls back, as with kill -9); the test then opens
a fresh ``Services`` on the same data directory, as a restart does. Every visit ends with one SR,
one PDF and one heatmap SC per photograph, each with one outbox job per destination, and never
a second copy under new UIDs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom
import pytest

from appliance.capture import Incoming
from appliance.config import Destination, Settings
from appliance.dicom.sr import device_observer_uid
from appliance.domain import Source
from appliance.pipeline.oct_documents import appliance_device
from tests.conftest import free_port, jpeg_bytes, wait_for

MODELS = Path(__file__).resolve().parents[2] / "models"
DAY = 86400.0


class Crash(BaseException):
    """The process dying at a step: not caught by the pipeline's ``except Exception``."""


def crash_at(step: str) -> Callable[[str], None]:
    def hook(name: str) -> None:
        if name == step:
            raise Crash(step)

    return hook


def _settings(settings: Settings) -> Settings:
    return settings.replace(
        models_dir=str(MODELS),
        heatmap_secondary_capture=True,
        destinations=(Destination("pacs", "127.0.0.1", free_port(), "NOBODY", timeout=2),),
    )


def _open(settings: Settings, *, worker: bool = False) -> Any:
    from appliance.runtime.services import Services

    services = Services(settings)
    services.start(dicom=False, hotfolder=False, worker=worker)
    return services


def _die(services: Any) -> None:
    """What a kill leaves: no orderly stop, no stop event; the database file as it is."""
    services.store.close()


def _photo(eye: str, nth: int = 0) -> bytes:
    from appliance.synth.case import render_case
    from appliance.synth.dataset import case_for

    cases = [
        c for c in (case_for(6160, i, (600, 800)) for i in range(200))
        if c.eye == eye and c.field == "macula" and c.defect is None
    ]  # fmt: skip
    return jpeg_bytes(render_case(cases[nth]))


def _pair(services: Any, patient: str, nth: int = 0) -> list[int]:
    ids = []
    for eye in ("R", "L"):
        capture = services.ingestor.ingest(
            Incoming(
                data=_photo(eye, nth),
                source=Source.UPLOAD,
                user_id="t",
                fields={"patient_id": patient, "laterality": eye},
            )
        )
        ids.append(int(capture.id))
    return ids


def _objects(services: Any, kind: str) -> list[dict[str, Any]]:
    return services.store.query("SELECT * FROM derived_objects WHERE kind = ? ORDER BY id", (kind,))


def _assert_every_document_once(services: Any, photos: int = 2) -> None:
    """One SR and one PDF referencing every OP, one SC per photograph, one job each; no UID
    anywhere that is not a recorded object's."""
    ops, srs, pdfs, scs = (_objects(services, k) for k in ("op", "sr", "pdf", "sc"))
    assert (len(ops), len(srs), len(pdfs), len(scs)) == (photos, 1, 1, photos)
    assert json.loads(srs[0]["references_json"]) == sorted(o["sop_instance_uid"] for o in ops)
    assert json.loads(pdfs[0]["references_json"]) == json.loads(srs[0]["references_json"])
    recorded = {o["sop_instance_uid"] for o in (*ops, *srs, *pdfs, *scs)}
    jobs = services.store.query("SELECT sop_instance_uid, destination, kind FROM outbox_jobs")
    assert sorted(j["sop_instance_uid"] for j in jobs) == sorted(recorded)
    for row in (*srs, *pdfs, *scs):
        assert services.blobs.resolve(row["file_path"]).is_file()
    assert services.store.query("SELECT * FROM documents_due") == []
    issued = services.store.query(
        "SELECT detail FROM audit_events WHERE json_extract(detail, '$.stage') = 'documents' "
        "AND json_extract(detail, '$.issued') IS NOT NULL"
    )
    kinds = sorted(k for e in issued for k in json.loads(e["detail"])["issued"])
    assert kinds == ["pdf", "sr"]  # issued once; the SCs went with their analyses
    assert services.audit.verify().ok


def test_a_visit_completed_just_before_a_crash_gets_its_documents_after_restart(
    settings: Settings,
) -> None:
    """Finding 1: outcome stored, then the process died before the documents were built. The
    quiet-period sweep skipped complete visits, so no SR or PDF came ever, not even after a
    restart."""
    settings = _settings(settings)
    first = _open(settings)
    ids = _pair(first, "CRASH1")
    first.pipeline.process(ids[0])
    first.pipeline.step_hook = crash_at("outcome")
    with pytest.raises(Crash):
        first.pipeline.process(ids[1])
    outcome = first.store.one("SELECT payload FROM visit_outcomes ORDER BY id DESC LIMIT 1")
    assert outcome is not None and json.loads(outcome["payload"])["complete"] is True
    assert len(_objects(first, "op")) == 2
    assert _objects(first, "sr") == _objects(first, "pdf") == []
    _die(first)

    restarted = _open(settings, worker=True)  # start-up as after a kill -9
    try:
        wait_for(lambda: _objects(restarted, "sr") and _objects(restarted, "pdf"), timeout=60)
    finally:
        restarted.stop()
    again = _open(settings)
    try:
        again.pipeline.issue_due(now=time.time() + DAY)
        again.pipeline.quiet_seconds = 60.0
        assert again.pipeline.issue_quiet_visits(now=time.time() + DAY) == 0
        _assert_every_document_once(again)
    finally:
        again.stop()


@pytest.mark.parametrize("step", ["analysed", "outcome", "documents_built"])
def test_a_crash_at_any_step_of_a_visit_ends_with_every_document_built_once(
    settings: Settings, step: str
) -> None:
    settings = _settings(settings)
    first = _open(settings)
    ids = _pair(first, f"STEP-{step}")
    first.pipeline.process(ids[0])
    first.pipeline.step_hook = crash_at(step)
    with pytest.raises(Crash):
        first.pipeline.process(ids[1])
    _die(first)

    restarted = _open(settings)
    try:
        restarted.pipeline.drain()
        restarted.pipeline.issue_due()
        _assert_every_document_once(restarted)
        # later passes, the quiet-period sweep and another restart add nothing
        restarted.pipeline.issue_due(now=time.time() + DAY)
        restarted.pipeline.quiet_seconds = 60.0
        assert restarted.pipeline.issue_quiet_visits(now=time.time() + DAY) == 0
    finally:
        restarted.stop()
    last = _open(settings)
    try:
        last.pipeline.drain()
        last.pipeline.issue_due(now=time.time() + DAY)
        _assert_every_document_once(last)
    finally:
        last.stop()


def test_a_new_photograph_after_the_documents_reissues_them_once(settings: Settings) -> None:
    """Images that change the visit make its SR and PDF due again: one new pair, no more."""
    settings = _settings(settings)
    services = _open(settings)
    try:
        ids = _pair(services, "AGAIN")
        services.pipeline.drain()
        assert len(_objects(services, "sr")) == 1
        services.ingestor.ingest(
            Incoming(
                data=_photo("R", nth=1),  # another photograph of the right eye
                source=Source.UPLOAD,
                user_id="t",
                fields={"patient_id": "AGAIN", "laterality": "R"},
            )
        )
        services.pipeline.drain()
        services.pipeline.issue_due(now=time.time() + DAY)
        srs, pdfs = _objects(services, "sr"), _objects(services, "pdf")
        assert len(srs) == len(pdfs) == 2 and len(ids) == 2
        assert len(json.loads(srs[1]["references_json"])) == 3
        assert services.store.query("SELECT * FROM documents_due") == []
        # the same appliance is the same observer in both (before: a new UID per SR)
        observers = {_device_observer(services.blobs.resolve(s["file_path"])) for s in srs}
        this = appliance_device(services.settings)  # this installation, not the placeholder
        assert observers == {device_observer_uid(settings.uid_root, this)}
    finally:
        services.stop()


def _device_observer(path: Path) -> str:
    """The Device Observer UID (DCM 121012) in an SR's observation context."""
    items = pydicom.dcmread(path).ContentSequence
    (uid,) = [i.UID for i in items if i.ConceptNameCodeSequence[0].CodeValue == "121012"]
    return str(uid)


def test_unbuildable_documents_are_tried_3_times_then_dead_lettered_and_retried_by_an_admin(
    settings: Settings,
) -> None:
    """Finding 2: a build that fails was tried every 30 s forever, silently, /healthz ok. Now:
    three tries with a doubling delay, then a dead letter with its reason, an audit event,
    /healthz "degraded", a gauge and the admin console; an admin's retry (audited) builds it."""
    from tests.admin_helpers import text
    from tests.web_helpers import csrf, logged_in
    from web import create_app

    settings = _settings(settings)
    services = _open(settings)
    try:
        app = create_app(settings, services)
        client = app.test_client()
        ids = _pair(services, "DEAD1")
        services.pipeline.process(ids[0])
        op = _objects(services, "op")[0]
        stored = services.blobs.resolve(op["file_path"])
        hidden = stored.with_name(stored.name + ".away")
        stored.rename(hidden)  # the right eye's OP file is unreadable from here on
        services.pipeline.process(ids[1])  # complete: SR + PDF due, first try fails

        def due_rows() -> list[dict[str, Any]]:
            return services.store.query("SELECT * FROM documents_due ORDER BY kind")

        assert [(r["kind"], r["state"], r["attempts"]) for r in due_rows()] == [
            ("pdf", "due", 1),
            ("sr", "due", 1),
        ]
        assert "FileNotFoundError" in due_rows()[0]["last_error"]
        assert client.get("/healthz").get_json()["status"] == "ok"  # still being tried
        services.pipeline.issue_due(now=time.time() + 10)  # before the delay: no try
        assert {r["attempts"] for r in due_rows()} == {1}
        services.pipeline.issue_due(now=time.time() + 31)
        assert {r["attempts"] for r in due_rows()} == {2}
        services.pipeline.issue_due(now=time.time() + 31 + 61)
        assert {(r["state"], r["attempts"]) for r in due_rows()} == {("dead", 3)}

        # never forever: later passes and the quiet-period sweep leave a dead letter alone
        services.pipeline.issue_due(now=time.time() + 30 * DAY)
        services.pipeline.quiet_seconds = 60.0
        assert services.pipeline.issue_quiet_visits(now=time.time() + DAY) == 0
        assert {(r["state"], r["attempts"]) for r in due_rows()} == {("dead", 3)}
        assert _objects(services, "sr") == _objects(services, "pdf") == []

        # never silent
        health = client.get("/healthz").get_json()
        assert (health["status"], health["documents_dead"], health["documents_due"]) == (
            "degraded",
            2,
            0,
        )
        metrics = client.get("/metrics").get_data(as_text=True)
        assert "appliance_documents_dead 2.0" in metrics
        assert "appliance_documents_due 0.0" in metrics
        events = [
            json.loads(e["detail"])
            for e in services.store.query(
                "SELECT detail FROM audit_events WHERE outcome = 8 "
                "AND json_extract(detail, '$.dead_letter')"
            )
        ]
        assert sorted(e["kind"] for e in events) == ["pdf", "sr"]
        assert all(e["attempts"] == 3 and "FileNotFoundError" in e["reason"] for e in events)

        admin = logged_in(app, services, "admin", "ann")
        overview = text(admin.get("/admin"))
        assert "Result documents not built ✖ 2 need attention" in overview
        assert "degraded" in overview
        page = admin.get("/admin/outbox").get_data(as_text=True)
        table = page[page.index('id="dead-documents"') :]
        assert "FileNotFoundError" in table and "sr" in table and "pdf" in table
        viewed = services.store.query(
            "SELECT detail FROM audit_events WHERE detail LIKE '%admin_documents_dead_letters%'"
        )
        assert len(viewed) == 1

        # the cause fixed, an admin makes them due again; built once
        hidden.rename(stored)
        response = admin.post(
            "/admin/outbox/documents/retry",
            data={"csrf_token": csrf(admin, "/admin/outbox"), "document": ""},
        )
        assert response.status_code == 302
        retried = services.store.query(
            "SELECT user_id, detail FROM audit_events "
            "WHERE json_extract(detail, '$.retried_dead_documents') IS NOT NULL"
        )
        assert [(r["user_id"], json.loads(r["detail"])["retried_dead_documents"])
                for r in retried] == [("ann", 2)]  # fmt: skip
        services.pipeline.issue_due()
        _assert_every_document_once(services)
        assert client.get("/healthz").get_json()["status"] == "ok"
        assert "appliance_documents_dead 0.0" in client.get("/metrics").get_data(as_text=True)
        assert "Every result document due has been built" in text(admin.get("/admin/outbox"))
    finally:
        services.stop()


def test_an_upgrade_owes_the_documents_a_crash_lost_before_this_version(settings: Settings) -> None:
    """Migration 8 records SR + PDF as due for complete visits whose newest outcome has none
    made after it (finding 1's victims on a device upgraded from schema 7); they are built."""
    import sqlite3
    from contextlib import closing

    settings = _settings(settings)
    first = _open(settings)
    fine = _pair(first, "FINE")  # a visit that got its documents: owes nothing after the upgrade
    first.pipeline.drain()
    assert len(_objects(first, "sr")) == 1
    ids = _pair(first, "UPGRADE", nth=2)
    first.pipeline.process(ids[0])
    first.pipeline.step_hook = crash_at("outcome")
    with pytest.raises(Crash):
        first.pipeline.process(ids[1])
    _die(first)
    with closing(sqlite3.connect(settings.data_path / "appliance.db")) as conn:
        conn.execute("DROP TABLE documents_due")  # the database as version 7 left it
        conn.execute("DROP TABLE camera_qualifications")
        for table, column in (  # migration 10 (signatures)
            ("users", "full_name"),
            ("users", "credentials"),
            ("reviews", "meaning"),
            ("reviews", "signer_name"),
            ("reviews", "signer_credentials"),
            ("reviews", "pdf_sop_instance_uid"),
        ):
            conn.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
        conn.execute("DROP TABLE eye_decisions")
        conn.execute("PRAGMA user_version = 7")
        conn.commit()

    upgraded = _open(settings)
    try:
        # 8 (documents_due), 9 (cameras), 10 (signatures), 11 (eye decisions), 12 and 13
        # (documents_due owes thickness maps and OCT segmentations too) applied, rows kept
        assert upgraded.store.schema_version == 13
        owed = upgraded.store.query("SELECT kind, state, capture_pk FROM documents_due")
        assert sorted((r["kind"], r["state"], r["capture_pk"]) for r in owed) == [
            ("pdf", "due", ids[1]),
            ("sr", "due", ids[1]),
        ]
        upgraded.pipeline.issue_due()
        assert upgraded.store.query("SELECT * FROM documents_due") == []
        for patient, captures in (("FINE", fine), ("UPGRADE", ids)):
            key = upgraded.store.one(
                "SELECT visit_key FROM visit_outcomes o JOIN captures c ON c.id = ? "
                "WHERE o.patient_pk = c.patient_pk ORDER BY o.id DESC LIMIT 1",
                (captures[1],),
            )
            assert key is not None, patient
            made = upgraded.store.query(
                "SELECT kind FROM derived_objects WHERE visit_key = ? AND kind IN ('sr', 'pdf')",
                (key["visit_key"],),
            )
            assert sorted(r["kind"] for r in made) == ["pdf", "sr"], patient
    finally:
        upgraded.stop()
