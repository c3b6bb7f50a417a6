"""update.sh (A/B with rollback) and backup.sh against an install.sh --root tree."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "firmware_scripts"


@pytest.fixture
def installed(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    done = subprocess.run(
        [str(SCRIPTS / "install.sh"), "--root", str(root), "--no-pip", "--platform", "cpu"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return root


def new_version(tmp_path: Path, version: str = "0.2.0") -> Path:
    """A checkout of a 'new' version: appliance/__init__.py and the models."""
    source = tmp_path / f"src-{version}"
    (source / "appliance").mkdir(parents=True)
    (source / "appliance/__init__.py").write_text(f'__version__ = "{version}"\n')
    shutil.copytree(
        REPO / "models", source / "models", ignore=shutil.ignore_patterns("recipe", "validation")
    )
    return source


def update(root: Path, source: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(SCRIPTS / "update.sh"), "--root", str(root), "--from", str(source), "--no-pip",
            "--python", sys.executable, "--health-tries", "2", "--health-interval", "0", *extra,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip


def outbox_db(root: Path) -> Path:
    db = root / "var/lib/retina-appliance/appliance.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE outbox_jobs (id INTEGER PRIMARY KEY, state TEXT)")
        conn.execute("INSERT INTO outbox_jobs (state) VALUES ('queued')")
    return db


def test_dry_run_prints_steps(installed: Path, tmp_path: Path) -> None:
    source = new_version(tmp_path)
    done = update(installed, source, "--dry-run", "--health-cmd", "true")
    assert done.returncode == 0, done.stderr
    for step in ("step 1", "step 2", "step 3", "step 4", "card.verify", "would run: mv -T"):
        assert step in done.stdout, step
    assert os.readlink(installed / "opt/retina-appliance/current") == "releases/0.1.0"
    assert not (installed / "opt/retina-appliance/releases/0.2.0").exists()


def test_update_then_rollback(installed: Path, tmp_path: Path) -> None:
    opt = installed / "opt/retina-appliance"
    db = outbox_db(installed)
    before = db.read_bytes()

    good = update(installed, new_version(tmp_path, "0.2.0"), "--health-cmd", "true")
    assert good.returncode == 0, good.stderr
    assert "sha256 ok" in good.stdout
    assert os.readlink(opt / "current") == "releases/0.2.0"
    assert (opt / "models/dr.card.json").is_file()

    bad = update(installed, new_version(tmp_path, "0.3.0"), "--health-cmd", "false")
    assert bad.returncode == 1
    assert "rolled back to releases/0.2.0" in bad.stderr
    assert os.readlink(opt / "current") == "releases/0.2.0"
    assert (opt / "releases/0.3.0").is_dir()  # kept for inspection
    assert db.read_bytes() == before  # the data dir (outbox) is never touched


def test_tampered_model_is_refused(installed: Path, tmp_path: Path) -> None:
    source = new_version(tmp_path)
    with (source / "models/dr.int8.onnx").open("ab") as model:
        model.write(b"\0")
    done = update(installed, source, "--health-cmd", "true")
    assert done.returncode != 0
    assert "model verification failed" in done.stderr
    assert os.readlink(installed / "opt/retina-appliance/current") == "releases/0.1.0"


def test_backup(tmp_path: Path) -> None:
    """install.sh --backup-recipient puts the age public key on the box; backup.sh encrypts
    to it; the private key (here, in the test, off the "box") decrypts the tar stream."""
    from tests.conftest import require_tool

    keygen = require_tool("age-keygen")
    age = require_tool("age")
    private = tmp_path / "backup-key.txt"
    subprocess.run([keygen, "-o", str(private)], check=True, capture_output=True)
    public = subprocess.run(
        [keygen, "-y", str(private)], check=True, capture_output=True, text=True
    ).stdout.strip()
    installed = tmp_path / "root"
    done = subprocess.run(
        [str(SCRIPTS / "install.sh"), "--root", str(installed), "--no-pip", "--platform", "cpu",
         "--backup-recipient", public],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    data = installed / "var/lib/retina-appliance"
    outbox_db(installed)
    (data / "blobs/ab").mkdir(parents=True)
    (data / "blobs/ab/cdef").write_bytes(b"image")
    (data / "audit.head").write_text("42 abc\n")
    dest = tmp_path / "backups"
    done = subprocess.run(
        [str(SCRIPTS / "backup.sh"), "--root", str(installed), "--dest", str(dest)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    (backup,) = dest.iterdir()
    assert backup.name.startswith("retina-backup-") and backup.name.endswith(".tar.age")
    restore = tmp_path / "restore"
    restore.mkdir()
    plain = subprocess.run([age, "-d", "-i", str(private), str(backup)], capture_output=True)
    assert plain.returncode == 0, plain.stderr
    subprocess.run(["tar", "-x", "-C", str(restore)], input=plain.stdout, check=True)
    with sqlite3.connect(restore / "appliance.db") as conn:
        assert conn.execute("SELECT state FROM outbox_jobs").fetchall() == [("queued",)]
    assert (restore / "blobs/ab/cdef").read_bytes() == b"image"
    assert (restore / "audit.head").read_text() == "42 abc\n"
