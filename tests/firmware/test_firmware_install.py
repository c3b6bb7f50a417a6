"""install.sh --root: the installed tree, twice (idempotent), nothing written outside it."""

from __future__ import annotations

import json
import os
import subprocess
import tomllib
from pathlib import Path

from appliance import config

SCRIPTS = Path(__file__).resolve().parents[2] / "firmware_scripts"


def install(root: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPTS / "install.sh"), "--root", str(root), "--no-pip", "--platform", "cpu", *extra],
        capture_output=True,
        text=True,
        timeout=60,
    )


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "manifest.json"
    }


def test_install_root_twice(tmp_path: Path) -> None:
    root = tmp_path / "root"
    outside_before = sorted(p.name for p in tmp_path.iterdir())
    first = install(root)
    assert first.returncode == 0, first.stderr
    tree = snapshot(root)
    second = install(root)
    assert second.returncode == 0, second.stderr
    assert snapshot(root) == tree  # idempotent: same files, same bytes (cert and key kept)
    assert sorted(p.name for p in tmp_path.iterdir()) == outside_before + ["root"]

    units = root / "etc/systemd/system"
    for unit in ("retina-appliance.service", "retina-health.service", "retina-health.timer"):
        assert (units / unit).read_text() == (SCRIPTS / "systemd" / unit).read_text()
    assert (units / "retina-kiosk.service").is_file()
    assert (root / "etc/systemd/journald.conf.d/retina.conf").read_text().count("SystemMaxUse=")

    settings = tomllib.loads((root / "etc/retina-appliance/appliance.toml").read_text())
    declared = {name for name, _, _ in config.declared()}
    assert set(settings) <= declared, set(settings) - declared
    assert settings["web_host"] == "127.0.0.1"
    assert settings["data_dir"] == "/var/lib/retina-appliance"
    assert settings["models_dir"] == "/opt/retina-appliance/models"
    assert isinstance(settings["dicom_port"], int)
    config.load(root / "etc/retina-appliance/appliance.toml", environ={})  # the app accepts it

    tls = root / "etc/retina-appliance/tls"
    assert (tls / "key.pem").stat().st_mode & 0o777 == 0o640  # root:retina on a device
    assert b"BEGIN CERTIFICATE" in (tls / "cert.pem").read_bytes()

    opt = root / "opt/retina-appliance"
    assert os.readlink(opt / "current") == "releases/0.1.0"
    assert (opt / "models" / "dr.card.json").is_file()  # via current -> releases/0.1.0
    assert os.access(opt / "bin/health-check", os.X_OK)
    assert (root / "var/lib/retina-appliance").stat().st_mode & 0o777 == 0o700

    manifest = json.loads((opt / "manifest.json").read_text())
    assert manifest["platform"] == "cpu"
    assert manifest["encrypted"] is False  # a tmp dir is not on dm-crypt
    assert manifest["onnxruntime"]["choice"].startswith("onnxruntime (CPU")
    assert manifest["versions"]["appliance"] == "0.1.0"
    assert manifest["service_user"] == {"name": "retina", "created": False}
    assert "/etc/systemd/system/retina-appliance.service" in manifest["installed_files"]
    assert "NOT on an encrypted" in first.stderr
    assert "appliance users add" in first.stdout


def test_listen_and_kept_config(tmp_path: Path) -> None:
    done = install(tmp_path, "--listen", "0.0.0.0", "--platform", "x86-gpu")
    assert done.returncode == 0, done.stderr
    toml = tmp_path / "etc/retina-appliance/appliance.toml"
    assert tomllib.loads(toml.read_text())["web_host"] == "0.0.0.0"
    manifest = json.loads((tmp_path / "opt/retina-appliance/manifest.json").read_text())
    assert manifest["platform"] == "x86-gpu"
    assert "onnxruntime-gpu" in manifest["onnxruntime"]["choice"]
    toml.write_text(toml.read_text() + 'api_token = "site-secret"\n')
    assert install(tmp_path).returncode == 0
    assert "site-secret" in toml.read_text()  # a technician's edit survives a re-run


def test_dry_run_writes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "root"
    done = install(root, "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "would run: mkdir -p" in done.stdout
    assert not root.exists()


def test_bad_options(tmp_path: Path) -> None:
    assert install(tmp_path, "--platform", "mainframe").returncode != 0
    jetson = subprocess.run(
        [str(SCRIPTS / "install.sh"), "--root", str(tmp_path), "--platform", "jetson"],
        capture_output=True,
        text=True,
    )
    assert jetson.returncode != 0 and "PyPI has no aarch64 GPU build" in jetson.stderr


def test_first_admin_is_created_once(tmp_path: Path) -> None:
    import sys

    root = tmp_path / "root"
    cli = Path(sys.executable).with_name("appliance")
    env = {**os.environ, "APPLIANCE_CLI": str(cli)}
    args = [str(SCRIPTS / "install.sh"), "--root", str(root), "--no-pip", "--platform", "cpu"]
    first = subprocess.run(
        [*args, "--admin", "siteadmin"],
        input="a long enough password\n",
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert first.returncode == 0, first.stderr
    data = root / "var" / "lib" / "retina-appliance"
    listed = subprocess.run(
        [str(cli), "users", "list", "--json"],
        capture_output=True,
        text=True,
        env={**env, "APPLIANCE_DATA_DIR": str(data)},
        check=True,
    )
    assert [(u["username"], u["role"]) for u in json.loads(listed.stdout)] == [
        ("siteadmin", "admin")
    ]
    again = subprocess.run(
        [*args, "--admin", "other"], capture_output=True, text=True, timeout=120, env=env
    )
    assert again.returncode == 0, again.stderr
    assert "a web admin exists" in again.stdout


def test_https_when_listening_beyond_loopback(tmp_path: Path) -> None:
    local = install(tmp_path / "a")
    assert local.returncode == 0, local.stderr
    text = (tmp_path / "a" / "etc" / "retina-appliance" / "appliance.toml").read_text()
    assert "web_tls_cert" not in tomllib.loads(text)
    lan = install(tmp_path / "b", "--listen", "0.0.0.0")
    assert lan.returncode == 0, lan.stderr
    settings = tomllib.loads(
        (tmp_path / "b" / "etc" / "retina-appliance" / "appliance.toml").read_text()
    )
    assert settings["web_tls_cert"] == "/etc/retina-appliance/tls/cert.pem"
    assert settings["web_tls_key"] == "/etc/retina-appliance/tls/key.pem"
    key = tmp_path / "b" / "etc" / "retina-appliance" / "tls" / "key.pem"
    assert oct(key.stat().st_mode & 0o777) == "0o640"
