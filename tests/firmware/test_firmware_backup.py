"""backup.sh: an encrypted (age) backup, no plaintext on disk, and the documented restore."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
from pathlib import Path

import pytest

from tests.conftest import require_tool

SCRIPTS = Path(__file__).resolve().parents[2] / "firmware_scripts"
MARKER = b"PHI-MARKER Doe^Jane 1970-01-01 "  # stands in for patient data in images and rows


def make_data(data: Path) -> None:
    (data / "blobs" / "ab").mkdir(parents=True)
    (data / "blobs" / "ab" / "ab12.jpg").write_bytes(MARKER + os.urandom(200_000))
    (data / "blobs" / "cd.dcm").write_bytes(MARKER * 1000)
    (data / "audit.head").write_text("42 deadbeef\n")
    conn = sqlite3.connect(data / "appliance.db")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE patients (id INTEGER PRIMARY KEY, name TEXT)")
    conn.executemany(
        "INSERT INTO patients (name) VALUES (?)", [(MARKER.decode() + str(i),) for i in range(500)]
    )
    conn.commit()
    conn.close()


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    """The private key lives with the test (off the "device"); the box gets the public key."""
    keygen = require_tool("age-keygen")
    require_tool("age")
    private = tmp_path / "offsite" / "backup-key.txt"
    private.parent.mkdir()
    subprocess.run([keygen, "-o", str(private)], check=True, capture_output=True)
    public = subprocess.run(
        [keygen, "-y", str(private)], check=True, capture_output=True, text=True
    ).stdout
    recipients = tmp_path / "root" / "etc" / "retina-appliance" / "backup-recipients.txt"
    recipients.parent.mkdir(parents=True)
    recipients.write_text(public)
    return private, recipients


def backup(root: Path, dest: Path, *extra: str, env: dict[str, str] | None = None,
           prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:  # fmt: skip
    return subprocess.run(
        [*prefix, str(SCRIPTS / "backup.sh"), "--root", str(root), "--dest", str(dest), *extra],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip


def test_encrypted_backup_and_restore(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    private, _ = keys
    root = tmp_path / "root"
    data = root / "var/lib/retina-appliance"
    make_data(data)
    dest = tmp_path / "usb"
    dest.mkdir()
    scratch = tmp_path / "scratch"  # TMPDIR: nothing may land there either
    scratch.mkdir()
    done = backup(root, dest, env={**os.environ, "TMPDIR": str(scratch)})
    assert done.returncode == 0, done.stderr
    files = list(dest.iterdir())
    assert len(files) == 1 and re.fullmatch(r"retina-backup-\d{8}T\d{6}Z\.tar\.age", files[0].name)
    archive = files[0]
    assert archive.stat().st_mode & 0o777 == 0o600
    ciphertext = archive.read_bytes()
    assert ciphertext.startswith(b"age-encryption.org/v1\n")
    assert MARKER not in ciphertext and b"SQLite format 3" not in ciphertext
    assert list(scratch.iterdir()) == []

    # the documented restore: age -d -i KEY FILE | tar -x -C DIR
    restore = tmp_path / "restore"
    restore.mkdir()
    subprocess.run(
        f"age -d -i '{private}' '{archive}' | tar -x -C '{restore}'",
        shell=True, check=True, capture_output=True,
    )  # fmt: skip
    assert sorted(str(p.relative_to(restore)) for p in restore.rglob("*") if p.is_file()) == [
        "appliance.db", "audit.head", "blobs/ab/ab12.jpg", "blobs/cd.dcm"
    ]  # fmt: skip
    for name in ("audit.head", "blobs/ab/ab12.jpg", "blobs/cd.dcm"):
        assert (restore / name).read_bytes() == (data / name).read_bytes(), name
    conn = sqlite3.connect(restore / "appliance.db")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    restored = conn.execute("SELECT id, name FROM patients ORDER BY id").fetchall()
    original = (
        sqlite3.connect(data / "appliance.db")
        .execute("SELECT id, name FROM patients ORDER BY id")
        .fetchall()
    )
    assert restored == original and len(restored) == 500

    # the box (public key only) cannot decrypt its own backup
    wrong = tmp_path / "other-key.txt"
    subprocess.run(["age-keygen", "-o", str(wrong)], check=True, capture_output=True)
    denied = subprocess.run(["age", "-d", "-i", str(wrong), str(archive)], capture_output=True)
    assert denied.returncode != 0 and MARKER not in denied.stdout


def test_no_plaintext_file_is_ever_opened_for_writing(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    """strace -f: every file the backup opens for writing is the .partial ciphertext (or
    /dev/null, or the live database's WAL files); the database copy, the images and the tar
    stream never touch a file."""
    strace = require_tool("strace")
    root = tmp_path / "root"
    make_data(root / "var/lib/retina-appliance")
    dest = tmp_path / "usb"
    dest.mkdir()
    trace = tmp_path / "trace.txt"
    done = backup(
        root, dest, prefix=(strace, "-f", "-qq", "-e", "trace=open,openat,creat", "-o", str(trace))
    )
    if done.returncode != 0 and "ptrace" in done.stderr:
        pytest.skip("ptrace is not permitted here")
    assert done.returncode == 0, done.stderr
    written = set()
    for line in trace.read_text().splitlines():
        match = re.search(r'open(?:at)?\((?:[^,]+, )?"([^"]+)", ([A-Z_|]+)', line)
        if match and re.search(r"O_WRONLY|O_RDWR|O_CREAT", match.group(2)) and "= -1" not in line:
            written.add(match.group(1))
    # SQLite opens the LIVE database's own -wal/-shm read-write even for a read-only reader in
    # WAL mode: they exist already, on the (encrypted) data volume, and hold no new copy.
    data = root / "var/lib/retina-appliance"
    allowed = {
        "/dev/null",
        "/dev/tty",
        str(data / "appliance.db-wal"),
        str(data / "appliance.db-shm"),
    }
    partial = [w for w in written if w.endswith(".tar.age.partial")]
    assert len(partial) == 1, written
    assert written - allowed - set(partial) == set(), written


def test_refusals(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    private, recipients = keys
    root = tmp_path / "root"
    make_data(root / "var/lib/retina-appliance")
    dest = tmp_path / "usb"
    dest.mkdir()
    dry = backup(root, dest, "--dry-run")
    assert dry.returncode == 0 and f"age -R {recipients}" in dry.stdout
    # a private key on the box is refused (it would make the encryption pointless)
    recipients.write_text(private.read_text())
    bad = backup(root, dest)
    assert bad.returncode != 0 and "PRIVATE key" in bad.stderr
    recipients.unlink()
    none = backup(root, dest)
    assert none.returncode != 0 and "no backup recipient" in none.stderr
    assert list(dest.iterdir()) == []


def test_a_failing_database_copy_leaves_no_file(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    root = tmp_path / "root"
    data = root / "var/lib/retina-appliance"
    data.mkdir(parents=True)
    (data / "appliance.db").write_bytes(b"not a database" * 100)
    dest = tmp_path / "usb"
    dest.mkdir()
    done = backup(root, dest)
    assert done.returncode != 0
    assert list(dest.iterdir()) == []  # no partial or truncated backup left behind
