"""The hot folder at its edges: names of any length, output folders that are symbolic links,
odd entries in the inbox, and a stored file that cannot be moved.

Every test drives ``HotFolder.scan(now=...)`` with explicit monotonic times on services whose
threads are not started, so nothing depends on the scheduler.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from appliance.capture.hotfolder import HotFolder
from appliance.config import Settings
from appliance.runtime.services import Services
from tests.capture.test_hotfolder import capture_with, captures, find, image, refusals
from tests.conftest import require_tool


@pytest.fixture
def idle(settings: Settings) -> Iterator[Services]:
    svc = Services(settings)
    try:
        yield svc
    finally:
        svc.stop()


@pytest.fixture
def hot(idle: Services, tmp_path: Path) -> HotFolder:
    return HotFolder(idle.ingestor, tmp_path / "camera", stable_seconds=1.0, poll_seconds=0.05)


def scan_many(hot: HotFolder, start: float = 100.0, times: int = 6) -> int:
    return sum(hot.scan(now=start + i * 10.0) for i in range(times))


def days() -> list[str]:
    """Today's and tomorrow's UTC day folder names (a test may run across midnight)."""
    now = datetime.now(UTC)
    return [now.strftime("%Y%m%d"), (now + timedelta(days=1)).strftime("%Y%m%d")]


def inbox_files(hot: HotFolder) -> list[str]:
    return sorted(e.name for e in os.scandir(hot.inbox) if e.name not in ("processed", "rejected"))


def moved(folder: Path) -> list[Path]:
    """Files moved into ``folder`` (its day folders), without the notes written beside them."""
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and not p.name.endswith((".txt", ".json"))
    )


def original_name(note: Path) -> str:
    """The original name a reason or name note records (a JSON string after the label)."""
    for line in note.read_text(encoding="utf-8").splitlines():
        if line.startswith("original name: "):
            value = json.loads(line.removeprefix("original name: "))
            assert isinstance(value, str)
            return value
    raise AssertionError(f"{note} records no original name")


def events(svc: Services, key: str) -> list[dict[str, Any]]:
    """Audit events whose detail carries ``hotfolder: key``."""
    out = []
    for row in svc.audit.rows():
        detail = json.loads(row["detail"])
        if detail.get("hotfolder") == key:
            out.append({**row, "detail": detail})
    return out


# -- names of any length ---------------------------------------------------------------------------


def test_a_255_character_name_dropped_twice_is_taken_twice_and_never_again(
    idle: Services, hot: HotFolder
) -> None:
    name = "A" * 251 + ".jpg"
    first, second = image(seed=31), image(seed=32)
    (hot.inbox / name).write_bytes(first)
    assert scan_many(hot) == 1
    (hot.inbox / name).write_bytes(second)
    assert scan_many(hot, start=200.0) == 1

    assert capture_with(idle, first) is not None and capture_with(idle, second) is not None
    assert inbox_files(hot) == []
    stored = moved(hot.processed)
    assert sorted(p.read_bytes() for p in stored) == sorted([first, second])
    for path in stored:
        assert len(path.name) < 100  # a generated name, with room for any suffix
        assert path.suffix == ".jpg"
        assert original_name(path.with_name(path.name + ".name.txt")) == name
    # Nothing is taken again: two arrivals, no refusals, no repeated events.
    before = len(list(idle.audit.rows()))
    assert scan_many(hot, start=300.0) == 0
    assert len(list(idle.audit.rows())) == before
    assert len(captures(idle)) == 2 and refusals(idle) == []


@pytest.mark.parametrize("length", [200, 201, 244, 245, 250, 255])
def test_names_of_every_length_are_moved_with_a_reason_file(
    idle: Services, hot: HotFolder, length: int
) -> None:
    bad = "B" * (length - 4) + ".jpg"
    good = "G" * (length - 4) + ".jpg"
    (hot.inbox / bad).write_text("this is not a picture\n", encoding="utf-8")
    data = image(seed=length)
    (hot.inbox / good).write_bytes(data)

    assert scan_many(hot) == 2
    assert inbox_files(hot) == []
    (rejected,) = moved(hot.rejected)
    assert rejected.read_text(encoding="utf-8") == "this is not a picture\n"
    reason = rejected.with_name(rejected.name + ".reason.txt")
    assert reason.read_text(encoding="utf-8").split(":")[0] == "unrecognised_format"
    assert original_name(reason) == bad
    (taken,) = moved(hot.processed)
    assert taken.read_bytes() == data and capture_with(idle, data) is not None
    if taken.name != good:
        assert original_name(taken.with_name(taken.name + ".name.txt")) == good
    assert [e["detail"]["refused"] for e in refusals(idle)] == ["unrecognised_format"]


def test_a_name_that_is_not_utf8_is_recorded_exactly(idle: Services, hot: HotFolder) -> None:
    raw = b"caf\xe9-" + b"x" * 230 + b"\n.doc"  # Latin-1, a newline, and too long to keep
    path = os.path.join(os.fsencode(hot.inbox), raw)
    with open(path, "wb") as fh:
        fh.write(b"camera notes\n")

    assert scan_many(hot) == 1
    assert inbox_files(hot) == []
    (rejected,) = moved(hot.rejected)
    reason = rejected.with_name(rejected.name + ".reason.txt")
    assert reason.read_text(encoding="utf-8").split(":")[0] == "unsupported_format"
    assert original_name(reason) == raw.decode("utf-8", "backslashreplace")


# -- processed/ and rejected/ are never followed ---------------------------------------------------


@pytest.mark.parametrize("where", ["processed", "rejected", "processed/DAY", "rejected/DAY"])
def test_output_folders_that_are_symlinks_are_replaced_never_followed(
    idle: Services, hot: HotFolder, tmp_path: Path, where: str
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    top, _, day = where.partition("/")
    parent = hot.inbox / top
    links = [parent / d for d in days()] if day else [parent]
    for link in links:
        if link.exists():
            link.rmdir()
        link.symlink_to(outside, target_is_directory=True)
    (hot.inbox / "NOTES.jpg").write_text("not a picture\n", encoding="utf-8")
    data = image(seed=41)
    (hot.inbox / "IMG.jpg").write_bytes(data)

    assert scan_many(hot) == 2
    assert list(outside.iterdir()) == []
    assert inbox_files(hot) == []
    for folder in (hot.processed, hot.rejected):
        assert folder.is_dir() and not folder.is_symlink()
        for path in moved(folder):
            assert not path.parent.is_symlink()
            assert path.resolve().is_relative_to(hot.inbox.resolve())
    assert find(hot.processed, "IMG.jpg") is not None
    assert find(hot.rejected, "NOTES.jpg.reason.txt") is not None
    (alert,) = events(idle, "folder_replaced")
    assert alert["event_id"] == "110113" and alert["outcome"] == 8
    assert alert["detail"]["folder"] in {where.replace("DAY", d) for d in days()}
    assert alert["detail"]["was"] == "symlink"


def test_a_symlinked_output_folder_found_at_start_is_replaced(
    idle: Services, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    inbox = tmp_path / "camera"
    inbox.mkdir()
    (inbox / "rejected").symlink_to(outside, target_is_directory=True)
    hot = HotFolder(idle.ingestor, inbox, stable_seconds=1.0)
    assert hot.rejected.is_dir() and not hot.rejected.is_symlink()
    (inbox / "NOTES.jpg").write_text("not a picture\n", encoding="utf-8")

    assert scan_many(hot) == 1
    assert list(outside.iterdir()) == []
    assert find(hot.rejected, "NOTES.jpg.reason.txt") is not None
    assert [e["detail"]["folder"] for e in events(idle, "folder_replaced")] == ["rejected"]


# -- odd entries: one notice each ------------------------------------------------------------------


def test_symlinks_fifos_and_folders_in_the_inbox_are_announced_once(
    idle: Services, hot: HotFolder, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    target = tmp_path / "outside.jpg"
    target.write_bytes(image(seed=51))
    (hot.inbox / "LINK.jpg").symlink_to(target)
    (hot.inbox / "DIRLINK").symlink_to(tmp_path, target_is_directory=True)
    os.mkfifo(hot.inbox / "PIPE.jpg")
    (hot.inbox / "SUB").mkdir()
    (hot.inbox / "SUB" / "IMG.jpg").write_bytes(image(seed=52))

    with caplog.at_level(logging.WARNING, logger="appliance.capture.hotfolder"):
        assert scan_many(hot) == 0
        assert scan_many(hot, start=200.0) == 0
    noticed = {e["detail"]["name"]: e for e in events(idle, "ignored")}
    assert {name: e["detail"]["kind"] for name, e in noticed.items()} == {
        "LINK.jpg": "symlink",
        "DIRLINK": "symlink",
        "PIPE.jpg": "fifo",
        "SUB": "folder",
    }
    assert len(events(idle, "ignored")) == 4
    assert noticed["LINK.jpg"]["event_id"] == "110113"  # a link is a security alert
    assert noticed["SUB"]["event_id"] == "110107" and noticed["SUB"]["outcome"] == 4
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 4
    assert all(r.exc_info is None for r in caplog.records)
    assert captures(idle) == []
    assert inbox_files(hot) == ["DIRLINK", "LINK.jpg", "PIPE.jpg", "SUB"]  # left as they are
    assert target.read_bytes() == image(seed=51)

    # Gone and back: announced again, once.
    (hot.inbox / "SUB" / "IMG.jpg").unlink()
    (hot.inbox / "SUB").rmdir()
    assert scan_many(hot, start=300.0) == 0
    (hot.inbox / "SUB").mkdir()
    assert scan_many(hot, start=400.0) == 0
    assert [e["detail"]["name"] for e in events(idle, "ignored")].count("SUB") == 2


# -- stored but not moved: no retry loop -----------------------------------------------------------


@pytest.fixture
def immutable_days(hot: HotFolder) -> Iterator[list[Path]]:
    """Today's and tomorrow's processed/ day folders made immutable: nothing can be moved in."""
    chattr = require_tool("chattr")
    folders = [hot.processed / d for d in days()]
    for folder in folders:
        folder.mkdir(parents=True)
        subprocess.run([chattr, "+i", str(folder)], check=True, capture_output=True)
    try:
        yield folders
    finally:
        for folder in folders:
            subprocess.run([chattr, "-i", str(folder)], check=True, capture_output=True)


def test_a_stored_file_that_cannot_be_moved_is_not_taken_again(
    idle: Services, hot: HotFolder, immutable_days: list[Path], caplog: pytest.LogCaptureFixture
) -> None:
    data = image(seed=61)
    (hot.inbox / "IMG.jpg").write_bytes(data)

    with caplog.at_level(logging.WARNING, logger="appliance.capture.hotfolder"):
        assert scan_many(hot) == 1
        before = len(list(idle.audit.rows()))
        assert scan_many(hot, start=200.0) == 0
    assert len(list(idle.audit.rows())) == before  # no event per scan
    (row,) = captures(idle)
    assert row["content_sha256"] == capture_with(idle, data)["content_sha256"]
    assert inbox_files(hot) == ["IMG.jpg"]  # it stays, stored, for someone to clear
    (notice,) = events(idle, "not_moved")
    assert notice["detail"]["capture_id"] == row["id"]
    assert notice["detail"]["folder"] == "processed"
    assert notice["outcome"] == 4
    assert len([r for r in caplog.records if "could not be moved" in r.getMessage()]) == 1
    assert all(r.exc_info is None for r in caplog.records)  # a plain line, no traceback

    # After a restart (a new scanner) the file is seen once more: a duplicate, moved if it can be.
    for folder in immutable_days:
        subprocess.run([require_tool("chattr"), "-i", str(folder)], check=True)
    again = HotFolder(idle.ingestor, hot.inbox, stable_seconds=1.0)
    assert scan_many(again) == 1
    assert inbox_files(hot) == [] and len(captures(idle)) == 1
    assert find(hot.processed, "IMG.jpg") is not None
