"""health-check against the real appliance served over HTTP on a free port."""

from __future__ import annotations

import json
import os
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


def health_check(*args: str, path: Path | None = None) -> tuple[int, dict[str, Any]]:
    """Run health-check; PATH (a folder of fake findmnt/lsblk) goes first on $PATH. Without
    one, the data dir (a tmp dir, never on dm-crypt) is declared a development box with
    --allow-unencrypted unless the call's arguments speak about encryption themselves."""
    env = dict(os.environ)
    if path is not None:
        env["PATH"] = f"{path}{os.pathsep}{env.get('PATH', '')}"
    elif not {"--manifest", "--allow-unencrypted"} & set(args):
        args = (*args, "--allow-unencrypted")
    done = subprocess.run(
        [sys.executable, str(HEALTH_CHECK), *args],
        capture_output=True, text=True, timeout=30, env=env,
    )  # fmt: skip
    report = json.loads(done.stdout)  # exactly one JSON object
    return done.returncode, report


def fake_block_tools(folder: Path, source: str, types: str) -> Path:
    """findmnt answering SOURCE for any target, lsblk answering TYPES (one per line), both
    logging their arguments to folder/calls.log: the real check logic runs on them."""
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "calls.log"
    for name, answer in (("findmnt", source), ("lsblk", types)):
        tool = folder / name
        tool.write_text(
            "#!/bin/sh\n"
            f'echo "{name} $*" >> "{log}"\n'
            f"printf '%s\\n' {' '.join(repr(line) for line in answer.split())}\n"
        )
        tool.chmod(0o755)
    return folder


def thermal(root: Path, **zones: int) -> Path:
    for name, millideg in zones.items():
        zone = root / f"thermal_zone{len(list(root.glob('thermal_zone*')))}"
        zone.mkdir(parents=True)
        (zone / "temp").write_text(f"{millideg}\n")
        (zone / "type").write_text(f"{name}\n")
    return root


def test_healthy(url: str, settings: Settings, tmp_path: Path) -> None:
    zones = thermal(tmp_path / "thermal", cpu=45000, gpu=51500)
    fakes = fake_block_tools(tmp_path / "bin", "/dev/mapper/retina-data", "crypt part disk")
    rc, report = health_check(
        "--url", url, "--data-dir", settings.data_dir, "--min-free-mb", "1",
        "--thermal-root", str(zones), "--manifest", str(tmp_path / "none.json"), path=fakes,
    )  # fmt: skip
    assert rc == 0, report
    assert report["healthy"] is True and report["failed"] == []
    checks = report["checks"]
    assert set(checks) == {
        "service", "accelerator", "models", "disk", "outbox", "archive", "temperature",
        "encryption",
    }  # fmt: skip
    assert checks["encryption"] == {
        "ok": True, "data_dir": settings.data_dir, "source": "/dev/mapper/retina-data",
        "encrypted": True,
    }  # fmt: skip
    assert report["warnings"] == []
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
    assert report["warnings"] == ["service", "encryption"]  # encryption: --allow-unencrypted
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


# -- encryption at rest ----------------------------------------------------------------------
# The service and the archive do not matter here: only the "encryption" entry is looked at.


def encryption(tmp_path: Path, *args: str, path: Path | None = None) -> tuple[int, dict[str, Any]]:
    from tests.conftest import free_port

    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    rc, report = health_check(
        "--url", f"http://127.0.0.1:{free_port()}", "--data-dir", str(data), "--min-free-mb", "1",
        "--thermal-root", str(tmp_path / "none"), "--timeout", "1", *args, path=path,
    )  # fmt: skip
    return rc, report


def test_a_data_dir_on_dm_crypt_passes(tmp_path: Path) -> None:
    """findmnt names the mount's source, lsblk --inverse finds a crypt layer below it (LVM on
    LUKS: lvm, crypt, part, disk): encrypted. A btrfs "[/subvol]" suffix is cut off."""
    fakes = fake_block_tools(tmp_path / "bin", "/dev/mapper/vg-data[/@data]", "lvm crypt part disk")
    rc, report = encryption(tmp_path, "--manifest", str(tmp_path / "none.json"), path=fakes)
    check = report["checks"]["encryption"]
    assert check["ok"] is True and check["encrypted"] is True, check
    assert check["source"] == "/dev/mapper/vg-data"
    assert "encryption" not in report["failed"] and "encryption" not in report["warnings"]
    calls = (fakes / "calls.log").read_text().splitlines()
    assert calls == [
        f"findmnt -n -o SOURCE --target {tmp_path / 'data'}",
        "lsblk -s -n -o TYPE /dev/mapper/vg-data",
    ]


def test_a_plain_partition_fails_not_warns(tmp_path: Path) -> None:
    """PHI on an unencrypted partition is a failure (exit 1), not a warning."""
    fakes = fake_block_tools(tmp_path / "bin", "/dev/sda2", "part disk")
    rc, report = encryption(tmp_path, "--manifest", str(tmp_path / "none.json"), path=fakes)
    check = report["checks"]["encryption"]
    assert rc == 1 and "encryption" in report["failed"], report
    assert check["ok"] is False and check["encrypted"] is False and check["source"] == "/dev/sda2"
    assert "not on an encrypted" in check["error"]


def test_the_real_tmp_dir_fails_without_an_opt_out(tmp_path: Path) -> None:
    """No fakes: the real findmnt/lsblk on this machine's tmp dir (not dm-crypt) fail it."""
    rc, report = encryption(tmp_path, "--manifest", str(tmp_path / "none.json"))
    assert rc == 1 and "encryption" in report["failed"]
    assert report["checks"]["encryption"]["encrypted"] is False


def test_the_opt_out_recorded_in_the_manifest_makes_it_a_warning(tmp_path: Path) -> None:
    fakes = fake_block_tools(tmp_path / "bin", "/dev/sda2", "part disk")
    manifest = tmp_path / "manifest.json"
    opt_out = {"set_by": "install.sh --no-encryption-i-understand", "user": "dev",
               "at": "2026-12-05T02:00:00+00:00"}  # fmt: skip
    manifest.write_text(json.dumps({"platform": "cpu", "encryption_opt_out": opt_out}))
    rc, report = encryption(tmp_path, "--manifest", str(manifest), path=fakes)
    check = report["checks"]["encryption"]
    assert check["ok"] is True and check["encrypted"] is False
    assert check["opt_out"] == {"by": "manifest", "manifest": str(manifest), **opt_out}
    assert "encryption" in report["warnings"] and "encryption" not in report["failed"]
    # an empty or absent opt-out is no opt-out
    manifest.write_text(json.dumps({"platform": "cpu", "encryption_opt_out": {}}))
    rc, report = encryption(tmp_path, "--manifest", str(manifest), path=fakes)
    assert "encryption" in report["failed"]


def test_the_command_line_opt_out_is_reported(tmp_path: Path) -> None:
    fakes = fake_block_tools(tmp_path / "bin", "/dev/sda2", "part disk")
    rc, report = encryption(
        tmp_path, "--manifest", str(tmp_path / "none.json"), "--allow-unencrypted", path=fakes
    )
    check = report["checks"]["encryption"]
    assert check["ok"] is True and check["opt_out"] == {"by": "--allow-unencrypted"}
    assert "NOT encrypted" in check["warning"]
