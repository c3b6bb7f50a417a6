"""JSON API: /healthz and POST /api/captures (token, formats, limits, hostile names)."""

from __future__ import annotations

import hashlib
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest

from appliance import __version__
from appliance.config import Settings
from appliance.runtime.services import Services
from tests.conftest import (
    API_TOKEN,
    fundus,
    jpeg_bytes,
    op_bytes,
    outside_files,
    png_bytes,
    wait_for,
)
from web import create_app

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
SMALL = (96, 128)


def image(seed: int = 1) -> bytes:
    return jpeg_bytes(fundus(seed=seed, size=SMALL))


def post(
    client: Any,
    data: bytes | None,
    *,
    filename: str = "IMG_0001.jpg",
    headers: dict[str, str] | None = None,
    **form: str,
) -> Any:
    body: dict[str, Any] = dict(form)
    if data is not None:
        body["file"] = (io.BytesIO(data), filename)
    return client.post(
        "/api/captures",
        data=body,
        headers=AUTH if headers is None else headers,
        content_type="multipart/form-data",
    )


def refusals(services: Services) -> list[dict[str, Any]]:
    rows = []
    for row in services.audit.rows():
        detail = json.loads(row["detail"])
        if "refused" in detail:
            rows.append({**row, "detail": detail})
    return rows


def assert_still_answers(client: Any) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json()["status"] == "ok"


def assert_refused(client: Any, services: Services, response: Any, status: int, error: str) -> None:
    assert response.status_code == status
    assert response.is_json
    assert response.get_json()["error"] == error
    assert response.get_json()["message"]
    assert [(r["outcome"], r["detail"]["refused"]) for r in refusals(services)] == [(4, error)]
    assert services.store.scalar("SELECT count(*) FROM captures") == 0
    assert services.audit.verify().ok
    assert_still_answers(client)


# -- health --------------------------------------------------------------------------------------


def test_healthz_reports_counts_and_no_phi(client: Any) -> None:
    response = post(
        client, image(), patient_id="PHI-ID-778899", patient_name="Quixote^Zebedee", sex="M"
    )
    assert response.status_code == 201

    response = client.get("/healthz")

    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ok"
    assert body["version"] == __version__
    assert body["captures"] == 1
    assert isinstance(body["pending_analysis"], int)
    assert isinstance(body["outbox_pending"], int)
    text = response.get_data(as_text=True)
    for phi in ("PHI-ID-778899", "Quixote", "Zebedee"):
        assert phi not in text


# -- authorisation -------------------------------------------------------------------------------


def test_upload_without_token_is_401_and_audited(client: Any, services: Services) -> None:
    response = post(client, image(), headers={})
    assert_refused(client, services, response, 401, "not_authorised")
    (event,) = refusals(services)
    assert event["user_id"] == "anonymous"


@pytest.mark.parametrize(
    "header",
    [
        pytest.param({"Authorization": "Bearer wrong-token"}, id="wrong-token"),
        pytest.param({"Authorization": f"Bearer {API_TOKEN}x"}, id="token-plus-one"),
        pytest.param({"Authorization": f"Basic {API_TOKEN}"}, id="wrong-scheme"),
        pytest.param({"Authorization": API_TOKEN}, id="no-scheme"),
        pytest.param({"Authorization": "Bearer "}, id="empty-bearer"),
    ],
)
def test_upload_with_wrong_token_is_401(
    client: Any, services: Services, header: dict[str, str]
) -> None:
    response = post(client, image(), headers=header)
    assert_refused(client, services, response, 401, "not_authorised")


def test_uploads_disabled_without_a_configured_token(settings: Settings, tmp_path: Path) -> None:
    own = settings.replace(api_token="", data_dir=str(tmp_path / "no-token"))
    services = Services(own)
    try:
        client = create_app(own, services).test_client()
        for headers in ({}, AUTH, {"Authorization": "Bearer "}):
            response = post(client, image(), headers=headers)
            assert response.status_code == 401
            assert response.get_json()["error"] == "uploads_disabled"
        assert services.store.scalar("SELECT count(*) FROM captures") == 0
        assert [r["detail"]["refused"] for r in refusals(services)] == ["uploads_disabled"] * 3
        assert services.audit.verify().ok
        assert_still_answers(client)
    finally:
        services.stop()


# -- accepted uploads ----------------------------------------------------------------------------


def test_jpeg_upload_is_stored_and_gets_a_quality_report(client: Any, services: Services) -> None:
    data = image()
    response = post(client, data)

    assert response.status_code == 201
    body = response.get_json()
    assert body["sha256"] == hashlib.sha256(data).hexdigest()
    assert body["media_type"] == "image/jpeg"
    assert body["duplicate"] is False
    row = services.store.one("SELECT * FROM captures WHERE id = ?", (body["id"],))
    assert row is not None and row["source"] == "upload"
    assert services.blobs.read(row["file_path"]) == data
    report = wait_for(
        lambda: services.store.one(
            "SELECT * FROM quality_reports WHERE capture_pk = ?", (body["id"],)
        )
    )
    assert 0.0 <= report["score"] <= 1.0


def test_same_file_again_is_a_duplicate(client: Any, services: Services) -> None:
    data = image()
    first = post(client, data)
    second = post(client, data, filename="another-name.jpg")

    assert first.status_code == 201
    assert second.status_code == 200
    assert second.get_json()["duplicate"] is True
    assert second.get_json()["id"] == first.get_json()["id"]
    assert services.store.scalar("SELECT count(*) FROM captures") == 1


@pytest.mark.parametrize(
    ("make", "filename", "media_type"),
    [
        pytest.param(lambda: png_bytes(fundus(seed=2, size=SMALL)), "x.png", "image/png", id="png"),
        pytest.param(
            lambda: op_bytes(fundus(seed=3, size=SMALL)), "x.dcm", "application/dicom", id="op"
        ),
    ],
)
def test_png_and_dicom_op_are_accepted(
    client: Any, services: Services, make: Any, filename: str, media_type: str
) -> None:
    data = make()
    response = post(client, data, filename=filename)
    assert response.status_code == 201
    assert response.get_json()["media_type"] == media_type
    assert response.get_json()["sha256"] == hashlib.sha256(data).hexdigest()


def test_op_upload_keeps_dicom_identity(client: Any, services: Services) -> None:
    response = post(client, op_bytes(fundus(seed=3, size=SMALL), laterality="L"))
    assert response.status_code == 201
    row = services.store.one(
        "SELECT c.laterality, c.laterality_source, p.patient_id FROM captures c "
        "JOIN patients p ON p.id = c.patient_pk WHERE c.id = ?",
        (response.get_json()["id"],),
    )
    assert row == {"laterality": "L", "laterality_source": "dicom", "patient_id": "PAT001"}


def test_form_identity_is_stored(client: Any, services: Services) -> None:
    response = post(
        client,
        image(),
        patient_id="P-42",
        patient_name="Doe^Jane",
        birth_date="19600101",
        sex="F",
        laterality="R",
    )
    assert response.status_code == 201
    row = services.store.one(
        "SELECT c.laterality, c.laterality_source, p.patient_id, p.patient_name, p.birth_date, "
        "p.sex FROM captures c JOIN patients p ON p.id = c.patient_pk WHERE c.id = ?",
        (response.get_json()["id"],),
    )
    assert row == {
        "laterality": "R",
        "laterality_source": "sidecar",
        "patient_id": "P-42",
        "patient_name": "Doe^Jane",
        "birth_date": "19600101",
        "sex": "F",
    }


# -- refusals ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"not an image at all\n" * 10, id="text"),
        pytest.param(b"", id="empty"),
        pytest.param(b"%PDF-1.7\n" + bytes(100), id="pdf"),
    ],
)
def test_not_an_image_is_415(client: Any, services: Services, data: bytes) -> None:
    response = post(client, data, filename="notes.jpg")
    assert_refused(client, services, response, 415, "unrecognised_format")


def test_body_over_the_limit_is_413(client: Any, services: Services, settings: Settings) -> None:
    data = image() + bytes(settings.upload_max_bytes)  # a valid JPEG with a long tail
    response = post(client, data)
    assert_refused(client, services, response, 413, "too_large")
    assert [p for p in (settings.data_path / "blobs").rglob("*") if p.is_file()] == []


def test_a_form_field_over_the_field_limit_is_413_saying_so(
    client: Any, services: Services, settings: Settings
) -> None:
    """A 1 MB text field, far under the upload limit, is refused for what it is: a form field
    too large (werkzeug's max_form_memory_size), not an upload over the upload limit."""
    response = post(client, image(), patient_name="A" * 1_000_000)
    assert_refused(client, services, response, 413, "too_large")
    message = response.get_json()["message"]
    assert "form field" in message and "500000" in message
    assert str(settings.upload_max_bytes) not in message


def test_disk_full_is_507_and_nothing_is_stored(settings: Settings, tmp_path: Path) -> None:
    own = settings.replace(min_free_disk_mb=1 << 40, data_dir=str(tmp_path / "full"))
    services = Services(own)
    try:
        client = create_app(own, services).test_client()
        response = post(client, image())
        assert_refused(client, services, response, 507, "disk_full")
        assert [p for p in (own.data_path / "blobs").rglob("*") if p.is_file()] == []
    finally:
        services.stop()


@pytest.mark.parametrize(
    "form",
    [
        pytest.param({"patient_id": "P1", "ward": "3B"}, id="unknown-field"),
        pytest.param({"patient_id": "P1", "birth_date": "1960-01-01"}, id="bad-birth-date"),
        pytest.param({"patient_id": "P1", "laterality": "X"}, id="bad-laterality"),
        pytest.param({"patient_id": "P1", "sex": "unknown"}, id="bad-sex"),
        pytest.param({"patient_name": "Doe^Jane"}, id="identity-without-id"),
        pytest.param({"patient_id": "P1\x00"}, id="control-character"),
        pytest.param({"patient_id": "P" * 65}, id="overlong-id"),
    ],
)
def test_bad_form_fields_are_422_bad_sidecar(
    client: Any, services: Services, form: dict[str, str]
) -> None:
    response = post(client, image(), **form)
    assert_refused(client, services, response, 422, "bad_sidecar")


def test_missing_file_field_is_422(client: Any, services: Services) -> None:
    response = post(client, None, patient_id="P1")
    assert_refused(client, services, response, 422, "no_file")


def test_file_sent_as_plain_form_value_is_422(client: Any, services: Services) -> None:
    response = client.post(
        "/api/captures",
        data={"file": "not-a-file-part"},
        headers=AUTH,
        content_type="multipart/form-data",
    )
    assert_refused(client, services, response, 422, "no_file")


# -- hostile names -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "filename", ["../../etc/passwd", "..\\..\\x.jpg", "/etc/cron.d/job.jpg", "....//x.jpg"]
)
def test_client_filename_is_never_used(
    client: Any, services: Services, tmp_path: Path, filename: str
) -> None:
    data = image()
    response = post(client, data, filename=filename)

    assert response.status_code == 201
    row = services.store.one(
        "SELECT file_path FROM captures WHERE id = ?", (response.get_json()["id"],)
    )
    assert row is not None
    digest = hashlib.sha256(data).hexdigest()
    assert row["file_path"] == f"blobs/{digest[:2]}/{digest}.jpg"
    data_dir = services.settings.data_path
    assert (data_dir / row["file_path"]).read_bytes() == data
    assert outside_files(tmp_path, data_dir) == []
    names = {p.name for p in tmp_path.rglob("*")}
    assert not names & {"passwd", "x.jpg", "..\\..\\x.jpg", "job.jpg"}
    assert filename not in json.dumps(list(services.audit.rows()))


def test_patient_id_traversal_is_stored_as_text_only(
    client: Any, services: Services, tmp_path: Path
) -> None:
    response = post(client, image(), patient_id="../..", laterality="L")

    assert response.status_code == 201
    row = services.store.one(
        "SELECT c.file_path, p.patient_id FROM captures c JOIN patients p ON p.id = c.patient_pk "
        "WHERE c.id = ?",
        (response.get_json()["id"],),
    )
    assert row is not None and row["patient_id"] == "../.."
    assert re.fullmatch(r"blobs/[0-9a-f]{2}/[0-9a-f]{64}\.jpg", row["file_path"])
    assert outside_files(tmp_path, services.settings.data_path) == []
    assert_still_answers(client)


# -- headers -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        ("get", "/healthz", {}),
        ("post", "/api/captures", {}),  # 401
        ("get", "/no-such-page", {}),  # 404
    ],
)
def test_security_headers_on_every_response(
    client: Any, method: str, path: str, headers: dict[str, str]
) -> None:
    response = getattr(client, method)(path, headers=headers)
    policy = response.headers.get("Content-Security-Policy", "")
    directives = {part.strip() for part in policy.split(";")}
    assert "default-src 'self'" in directives
    assert "frame-ancestors 'none'" in directives
    assert response.headers.get("X-Content-Type-Options") == "nosniff"
