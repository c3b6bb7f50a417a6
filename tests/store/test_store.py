from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from appliance.errors import OutOfResources
from appliance.store import BlobStore, Store, safe_uid
from appliance.store.migrations import MIGRATIONS


def test_schema_wal_and_full_sync(tmp_path: Path) -> None:
    store = Store(tmp_path / "a.db")
    assert store.schema_version == len(MIGRATIONS)
    tables = {r["name"] for r in store.query("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {
        "patients",
        "studies",
        "captures",
        "quality_reports",
        "results",
        "outbox_jobs",
        "audit_events",
    } <= tables
    assert store._writer.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store._writer.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    store.close()
    # reopening applies nothing twice
    assert Store(tmp_path / "a.db").schema_version == len(MIGRATIONS)


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    Store(tmp_path / "a.db").close()
    conn = sqlite3.connect(tmp_path / "a.db")
    conn.execute(f"PRAGMA user_version={len(MIGRATIONS) + 1}")
    conn.close()
    with pytest.raises(RuntimeError, match="newer than this software"):
        Store(tmp_path / "a.db")


def test_write_rolls_back_everything_on_error(tmp_path: Path) -> None:
    store = Store(tmp_path / "a.db")
    with pytest.raises(RuntimeError), store.write() as tx:
        tx.insert("patients", {"patient_id": "A", "created_at": "x"})
        raise RuntimeError("boom")
    assert store.scalar("SELECT count(*) FROM patients") == 0


def test_readers_are_read_only(tmp_path: Path) -> None:
    store = Store(tmp_path / "a.db")
    with pytest.raises(sqlite3.OperationalError):
        store.reader().execute("INSERT INTO patients (patient_id, created_at) VALUES ('x', 'y')")


def test_blob_names_come_from_the_hash_and_writes_are_whole(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    relative = blobs.put(b"abc", "image/jpeg")
    assert (
        relative == "blobs/ba/ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad.jpg"
    )
    assert blobs.read(relative) == b"abc"
    assert not list((tmp_path / "blobs").rglob(".tmp-*"))  # no temp files left behind
    assert blobs.put(b"abc", "image/jpeg") == relative


@pytest.mark.parametrize("relative", ["../x", "blobs/../../x", "/etc/passwd"])
def test_resolve_refuses_paths_outside_the_data_dir(tmp_path: Path, relative: str) -> None:
    with pytest.raises(ValueError, match="escapes"):
        BlobStore(tmp_path / "d").resolve(relative)


def test_full_disk_is_out_of_resources(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path, min_free_bytes=10**18)
    with pytest.raises(OutOfResources) as info:
        blobs.put(b"abc", "image/png")
    assert info.value.dimse_status == 0xA700 and info.value.http_status == 507
    assert not list((tmp_path / "blobs").rglob("*.png"))


@pytest.mark.parametrize(
    ("uid", "ok"),
    [
        ("1.2.840.10008.1.1", True),
        ("2.25.1", True),
        ("../../x", False),
        ("1..2", False),
        ("1.2.a", False),
        ("", False),
        ("1." + "2" * 70, False),
    ],
)
def test_safe_uid(uid: str, ok: bool) -> None:
    assert safe_uid(uid) is ok
