"""The report lifecycle and the electronic signature, through the Flask test client with real
services and the shipped models: preliminary → signed → amended (every version kept, each
naming what it replaces, each queued to every destination), the password re-entered (a wrong
one refused, audited, counted toward the lockout), the signer's full name and credentials."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pydicom
import pytest

from appliance.config import Destination, Settings
from tests.conftest import free_port, require_tool
from tests.web.test_review import MODELS, _visit
from tests.web_helpers import PASSWORD, add_user, csrf, logged_in, login

REFER = "Refer to an eye care professional"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The shipped models and two archives (nobody listens: jobs stay queued)."""
    archives = tuple(
        Destination(name=name, host="127.0.0.1", port=free_port(), ae_title=name.upper())
        for name in ("pacs", "backup")
    )
    return settings.replace(
        models_dir=str(MODELS), destinations=archives, clinic_name="Northside Eye Clinic"
    )


def _form(client: Any, key: str, **fields: str) -> dict[str, str]:
    html = client.get(f"/review/{key}").get_data(as_text=True)
    outcome_id = html.split('name="outcome_id" value="')[1].split('"')[0]
    token = csrf(client, f"/review/{key}")
    return {"csrf_token": token, "outcome_id": outcome_id, "password": PASSWORD, **fields}


def _documents(services: Any, key: str) -> list[dict[str, Any]]:
    return services.store.query(
        "SELECT * FROM derived_objects WHERE visit_key = ? AND kind IN ('sr', 'pdf') ORDER BY id",
        (key,),
    )


def _read(services: Any, uid: str) -> pydicom.Dataset:
    row = services.store.one(
        "SELECT file_path FROM derived_objects WHERE sop_instance_uid = ?", (uid,)
    )
    return pydicom.dcmread(io.BytesIO(services.blobs.read(row["file_path"])))


def _replaces(ds: pydicom.Dataset) -> set[str]:
    return {
        ref.ReferencedSOPInstanceUID
        for study in ds.get("PredecessorDocumentsSequence", [])
        for series in study.ReferencedSeriesSequence
        for ref in series.ReferencedSOPSequence
    }


def _jobs(services: Any, uid: str) -> list[tuple[str, str]]:
    rows = services.store.query(
        "SELECT kind, destination FROM outbox_jobs WHERE sop_instance_uid = ? ORDER BY destination",
        (uid,),
    )
    return [(r["kind"], r["destination"]) for r in rows]


def _pdf_text(ds: pydicom.Dataset, tmp_path: Path) -> str:
    path = tmp_path / f"{ds.SOPInstanceUID}.pdf"
    path.write_bytes(bytes(ds.EncapsulatedDocument[: int(ds.EncapsulatedDocumentLength)]))
    run = subprocess.run(
        [require_tool("pdftotext"), str(path), "-"], capture_output=True, text=True, check=True
    )
    return " ".join(run.stdout.split())


def _dciodvfy_errors(ds: pydicom.Dataset, tmp_path: Path) -> list[str]:
    path = tmp_path / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    run = subprocess.run([require_tool("dciodvfy"), str(path)], capture_output=True, text=True)
    return [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]


def test_preliminary_then_signed_then_amended(app: Any, services: Any, tmp_path: Path) -> None:
    key = _visit(services)
    wait = services.store.query  # the rows, read back
    preliminary = {d["kind"]: d["sop_instance_uid"] for d in _documents(services, key)}
    assert set(preliminary) == {"sr", "pdf"} and len(_documents(services, key)) == 2
    assert "Preliminary" in _pdf_text(_read(services, preliminary["pdf"]), tmp_path)
    client = logged_in(app, services, "clinician")

    # -- first sign-off: override to refer, a DR grade changed ------------------------------
    form = _form(client, key, decision="override", outcome_code="refer", grade_R="3",
                 reason="Haemorrhages in the right eye.")  # fmt: skip
    assert client.post(f"/review/{key}/sign", data=form).status_code == 303
    first = wait("SELECT * FROM reviews ORDER BY id")[-1]
    assert first["meaning"] == "reviewed and overridden"
    assert (first["signer_name"], first["signer_credentials"]) == ("Dr A. Grader", "MD")
    sr, pdf = (
        _read(services, first["sr_sop_instance_uid"]),
        _read(services, first["pdf_sop_instance_uid"]),
    )
    assert _replaces(sr) == {preliminary["sr"]} and _replaces(pdf) == {preliminary["pdf"]}
    assert sr.VerificationFlag == pdf.VerificationFlag == "VERIFIED"
    assert sr.VerifyingObserverSequence[0].VerifyingOrganization == "Northside Eye Clinic"
    old_pdf = _read(services, preliminary["pdf"])
    assert pdf.SeriesInstanceUID == old_pdf.SeriesInstanceUID and pdf.InstanceNumber == 2
    for ds in (sr, pdf):
        assert _jobs(services, ds.SOPInstanceUID) == [
            (ds.Modality.lower() if ds.Modality == "SR" else "pdf", "backup"),
            (ds.Modality.lower() if ds.Modality == "SR" else "pdf", "pacs"),
        ]
        assert _dciodvfy_errors(ds, tmp_path) == []
    text = _pdf_text(pdf, tmp_path)
    expected = (
        "Dr A. Grader",
        "MD",
        "reviewed and overridden",
        f"{REFER} (clinician's decision)",
        "Clinician's DR grade: Severe non-proliferative diabetic retinopathy",
        "The automated result was",
    )
    for words in expected:
        assert words in text, words
    assert "Preliminary" not in text
    path = tmp_path / "signed-sr.dcm"
    sr.save_as(path, enforce_file_format=True)
    dump = subprocess.run([require_tool("dsrdump"), str(path)], capture_output=True, text=True)
    assert dump.returncode == 0, dump.stderr
    header = dump.stdout.split("<CONTAINER", 1)[0]
    assert "VERIFIED" in header and "Grader" in header and "Northside Eye Clinic" in header

    # -- the amendment: accepted as it now stands, referencing the signed pair ---------------
    form = _form(client, key, decision="override", outcome_code="refer", reason="Amended.")
    assert client.post(f"/review/{key}/sign", data=form).status_code == 303
    second = wait("SELECT * FROM reviews ORDER BY id")[-1]
    assert second["meaning"] == "amended"
    sr2, pdf2 = (
        _read(services, second["sr_sop_instance_uid"]),
        _read(services, second["pdf_sop_instance_uid"]),
    )
    assert _replaces(sr2) == {first["sr_sop_instance_uid"], preliminary["sr"]}
    assert _replaces(pdf2) == {first["pdf_sop_instance_uid"], preliminary["pdf"]}
    assert "amended by Dr A. Grader" in _pdf_text(pdf2, tmp_path)
    assert len(_documents(services, key)) == 6  # every version kept

    # -- the review page lists every version; each PDF opens (audited) ---------------------
    html = client.get(f"/review/{key}").get_data(as_text=True)
    statuses = [part.split('"')[0] for part in html.split('data-status="')[1:]]
    assert statuses == ["amended", "amended", "signed", "signed", "preliminary", "preliminary"]
    links = [p.split('"')[0] for p in html.split('class="version-pdf" href="')[1:]]
    assert len(links) == 3
    opened = client.get(links[0])
    assert opened.status_code == 200 and opened.data.startswith(b"%PDF")
    viewed = services.store.one(
        "SELECT * FROM audit_events WHERE detail LIKE '%review report%' ORDER BY seq DESC"
    )
    assert viewed is not None and json.loads(viewed["sop_instance_uids"]) == [pdf2.SOPInstanceUID]
    other = client.get(links[0].replace(f"/review/{key}/", "/review/study:999/"))
    assert other.status_code == 404

    # -- the station's decision line follows the newest sign-off of the current outcome ----
    from appliance.desks.station_view import signed_line as _signed

    outcome_id = services.store.scalar(
        "SELECT max(id) FROM visit_outcomes WHERE visit_key = ?", (key,)
    )
    assert _signed(services.store, outcome_id) == f"Signed by Dr A. Grader, MD \u2014 {REFER}"
    assert services.audit.verify().ok


def test_a_wrong_password_is_refused_audited_and_counts_toward_the_lockout(
    app: Any, services: Any
) -> None:
    key = _visit(services)
    client = logged_in(app, services, "clinician")
    for attempt in range(1, 5):
        form = _form(client, key, decision="accept", password="not my password")
        refused = client.post(f"/review/{key}/sign", data=form)
        assert refused.status_code == 403
        assert "The password is wrong: not signed." in refused.get_data(as_text=True)
        failures = services.store.scalar("SELECT failed_logins FROM users")
        assert failures == attempt
    assert services.store.scalar("SELECT count(*) FROM reviews") == 0
    events = services.store.query(
        "SELECT * FROM audit_events WHERE event_id = '110114' AND outcome = 4 ORDER BY seq"
    )
    details = [json.loads(e["detail"]) for e in events]
    assert [d["cause"] for d in details] == ["wrong_password"] * 4
    assert all(d["purpose"] == "signature" and d["signing"] == key for d in details)
    assert {e["user_id"] for e in events} == {"clinician1"}

    # the fifth locks the account and ends the session; the login is refused too
    form = _form(client, key, decision="accept", password="still wrong")
    locked = client.post(f"/review/{key}/sign", data=form)
    assert locked.status_code == 303 and "/login" in locked.headers["Location"]
    assert services.store.scalar("SELECT locked_until FROM users") is not None
    assert client.get(f"/review/{key}").status_code == 302
    assert login(app.test_client(), "clinician1").status_code != 302
    assert services.store.scalar("SELECT count(*) FROM reviews") == 0
    # the review desk still answers others
    other = logged_in(app, services, "clinician", name="clinician2")
    assert other.get(f"/review/{key}").status_code == 200


def test_signing_needs_the_signers_full_name_and_credentials(app: Any, services: Any) -> None:
    key = _visit(services)
    user = services.accounts.add("bare", "clinician", PASSWORD, actor="test")  # no profile
    assert services.accounts.get(user.id).can_sign is False
    client = app.test_client()
    login(client, "bare")
    page = client.get(f"/review/{key}").get_data(as_text=True)
    assert 'id="no-profile"' in page
    refused = client.post(f"/review/{key}/sign", data=_form(client, key, decision="accept"))
    assert refused.status_code == 422
    assert "no full name or credentials" in refused.get_data(as_text=True)
    assert services.store.scalar("SELECT failed_logins FROM users WHERE id = ?", (user.id,)) == 0

    admin = logged_in(app, services, "admin")
    token = csrf(admin, "/admin/users")
    admin.post(
        f"/admin/users/{user.id}/profile",
        data={"csrf_token": token, "full_name": " Dr  B. Bare ", "credentials": "FRCOphth"},
    )
    signer = services.accounts.get(user.id)
    assert (signer.full_name, signer.credentials, signer.can_sign) == (
        "Dr B. Bare", "FRCOphth", True,
    )  # fmt: skip
    changed = services.store.one(
        "SELECT * FROM audit_events WHERE detail LIKE '%profile_set%' ORDER BY seq DESC"
    )
    assert json.loads(changed["detail"])["full_name"] == "Dr B. Bare"
    signed = client.post(f"/review/{key}/sign", data=_form(client, key, decision="accept"))
    assert signed.status_code == 303
    assert services.store.scalar("SELECT meaning FROM reviews") == "reviewed and approved"


def test_profile_fields_are_checked(services: Any) -> None:
    from appliance.errors import RejectedInput

    user = add_user(services, "carla", "clinician")
    for name, credentials in (("Dr^Carla", "MD"), ("Dr Carla", "x" * 65), ("A\x00", "MD")):
        with pytest.raises(RejectedInput):
            services.accounts.set_profile(user.id, name, credentials, actor="test")
    assert services.accounts.get(user.id).full_name == "Dr A. Grader"  # unchanged


def test_users_cli_sets_the_full_name_and_credentials(tmp_path: Path) -> None:
    import os

    env = {**os.environ, "APPLIANCE_DATA_DIR": str(tmp_path / "data")}
    cli = [sys.executable, "-m", "appliance.cli", "users"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*cli, *args], input=PASSWORD + "\n", capture_output=True, text=True, env=env,
            check=False,
        )  # fmt: skip

    added = run("add", "grader", "--role", "clinician", "--full-name", "Dr A. Grader",
                "--credentials", "MD")  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert run("add", "plain", "--role", "operator").returncode == 0  # the old form still works
    changed = run("profile", "grader", "--credentials", "MD, FRCOphth")
    assert changed.returncode == 0, changed.stderr
    assert run("profile", "nobody", "--full-name", "X").returncode == 2
    assert run("profile", "grader", "--full-name", "A^B").returncode == 2
    listed = json.loads(run("list", "--json").stdout)
    by_name = {u["username"]: u for u in listed}
    assert (by_name["grader"]["full_name"], by_name["grader"]["credentials"]) == (
        "Dr A. Grader", "MD, FRCOphth",
    )  # fmt: skip
    assert by_name["plain"]["full_name"] == ""
    assert "Dr A. Grader, MD, FRCOphth" in run("list").stdout
