"""health-check against the real appliance served over HTTP on a free port."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug.serving import make_server

from appliance.config import Settings

HEALTH_CHECK = Path(__file__).resolve().parents[2] / "firmware_scripts" / "health-check"


@pytest.fixture
def url(settings: Settings, services: Any) -> Iterator[str]:
    from web import create_app

    server = make_server("127.0.0.1", 0, create_app(settings, services), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(5)


def health_check(*args: str) -> tuple[int, dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, str(HEALTH_CHECK), *args], capture_output=True, text=True, timeout=30
    )
    report = json.loads(done.stdout)  # exactly one JSON object
    return done.returncode, report


def thermal(root: Path, **zones: int) -> Path:
    for name, millideg in zones.items():
        zone = root / f"thermal_zone{len(list(root.glob('thermal_zone*')))}"
        zone.mkdir(parents=True)
        (zone / "temp").write_text(f"{millideg}\n")
        (zone / "type").write_text(f"{name}\n")
    return root


def test_healthy(url: str, settings: Settings, tmp_path: Path) -> None:
    zones = thermal(tmp_path / "thermal", cpu=45000, gpu=51500)
    rc, report = health_check(
        "--url", url, "--data-dir", settings.data_dir, "--min-free-mb", "1",
        "--thermal-root", str(zones),
    )  # fmt: skip
    assert rc == 0, report
    assert report["healthy"] is True and report["failed"] == []
    checks = report["checks"]
    assert set(checks) == {
        "service", "accelerator", "models", "disk", "outbox", "archive", "temperature"
    }  # fmt: skip
    assert checks["service"]["ok"] is True
    assert checks["models"]["screening_model"] == "none installed"
    assert checks["disk"]["free_bytes"] > 0 and 0 < checks["disk"]["free_percent"] <= 100
    assert checks["outbox"]["pending"] == 0
    assert checks["outbox"]["oldest_pending_age_s"] is None  # db read, queue empty
    assert "db" not in checks["outbox"]
    assert checks["archive"]["status"] == "not configured"
    assert checks["temperature"]["max_c"] == 51.5
    assert "providers_in_use" in checks["accelerator"]


def test_a_degraded_service_is_a_warning_not_a_failure(
    url: str, settings: Settings, services: Any
) -> None:
    """A dead-lettered result document makes /healthz "degraded": the device still serves, so
    the check warns (an update must not roll back over it) instead of failing."""
    from appliance.store import utcnow

    capture = services.store.scalar("SELECT max(id) FROM captures")
    with services.store.write() as tx:
        if capture is None:
            capture = tx.insert(
                "captures",
                {"source": "upload", "media_type": "image/jpeg", "content_sha256": "0" * 64,
                 "file_path": "x/0.jpg", "size_bytes": 1, "received_at": utcnow(),
                 "status": "processed"},
            )  # fmt: skip
        now = utcnow()
        tx.insert(
            "documents_due",
            {"visit_key": "capture:1", "kind": "sr", "capture_pk": capture, "trigger": "test",
             "state": "dead", "attempts": 3, "next_attempt_at": now, "last_error": "x",
             "created_at": now, "updated_at": now},
        )  # fmt: skip
    rc, report = health_check(
        "--url", url, "--data-dir", settings.data_dir, "--min-free-mb", "1",
        "--thermal-root", str(settings.data_path / "no-thermal"),
    )  # fmt: skip
    assert rc == 0 and report["healthy"] is True, report
    assert report["warnings"] == ["service"]
    assert report["checks"]["service"]["status"] == "degraded"
    assert report["checks"]["service"]["warning"] == "degraded: documents_dead 1"


def test_require_models(url: str, settings: Settings) -> None:
    rc, report = health_check(
        "--url", url, "--data-dir", settings.data_dir, "--min-free-mb", "1", "--require-models"
    )  # fmt: skip
    assert rc == 1 and report["failed"] == ["models"]


def test_hot_and_full(url: str, settings: Settings, tmp_path: Path) -> None:
    zones = thermal(tmp_path / "thermal", cpu=45000, gpu=95000)
    free_mb = shutil.disk_usage(settings.data_dir).total // 2**20 + 1
    rc, report = health_check(
        "--url", url, "--data-dir", settings.data_dir, "--thermal-root", str(zones),
        "--min-free-mb", str(free_mb),
    )  # fmt: skip
    assert rc == 1
    assert report["healthy"] is False
    assert set(report["failed"]) == {"temperature", "disk"}
    assert report["checks"]["temperature"]["max_c"] == 95.0


def test_service_down(tmp_path: Path) -> None:
    from tests.conftest import free_port

    rc, report = health_check(
        "--url", f"http://127.0.0.1:{free_port()}", "--data-dir", str(tmp_path),
        "--min-free-mb", "1", "--thermal-root", str(tmp_path / "none"),
    )  # fmt: skip
    assert rc == 1 and "service" in report["failed"]
    assert report["checks"]["temperature"]["status"] == "no thermal zones"


def test_archive_echo(url: str, settings: Settings, services: Any) -> None:
    """C-ECHO with dcmtk echoscu against the appliance's own SCP, then a closed port."""
    from tests.conftest import free_port, require_tool

    require_tool("echoscu")
    archive = f"127.0.0.1:{settings.dicom_port}:{settings.dicom_ae_title}"
    base = ["--url", url, "--data-dir", settings.data_dir, "--min-free-mb", "1"]
    rc, report = health_check(*base, "--archive", archive)
    assert rc == 0, report["checks"]["archive"]
    rc, report = health_check(
        *base, "--archive", f"127.0.0.1:{free_port()}:NOWHERE", "--timeout", "2"
    )
    assert rc == 1 and report["failed"] == ["archive"]
