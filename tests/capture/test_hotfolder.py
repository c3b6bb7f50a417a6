"""The hot folder: only stable files are taken; sidecars, rejections, symlinks, duplicates.

Most tests run against the started ``services`` (inbox = settings.inbox_path, stable time
0.3 s, poll 0.05 s). The unit-style tests at the end drive ``HotFolder.scan(now=...)`` with
explicit monotonic times, so they do not depend on the scheduler.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from appliance.capture.hotfolder import HotFolder
from appliance.config import Settings
from appliance.runtime.services import Services
from tests.conftest import fundus, jpeg_bytes, op_bytes, outside_files, wait_for

SMALL = (96, 128)
# How long to wait for something that should happen within a few stable periods (0.3 s).
SOON = 5.0


def image(seed: int = 1) -> bytes:
    return jpeg_bytes(fundus(seed=seed, size=SMALL))


def today_or_tomorrow(before: str) -> set[str]:
    return {before, datetime.now(UTC).strftime("%Y%m%d")}


def utc_day() -> str:
    return datetime.now(UTC).strftime("%Y%m%d")


def find(folder: Path, name: str) -> Path | None:
    found = sorted(folder.rglob(name))
    return found[0] if found else None


def captures(services: Services) -> list[dict[str, Any]]:
    return services.store.query("SELECT * FROM captures ORDER BY id")


def capture_with(services: Services, data: bytes) -> dict[str, Any] | None:
    return services.store.one(
        "SELECT * FROM captures WHERE content_sha256 = ?", (hashlib.sha256(data).hexdigest(),)
    )


def refusals(services: Services) -> list[dict[str, Any]]:
    rows = []
    for row in services.audit.rows():
        detail = json.loads(row["detail"])
        if "refused" in detail:
            rows.append({**row, "detail": detail})
    return rows


@pytest.fixture
def inbox(services: Services) -> Path:
    assert services.hotfolder is not None
    return services.settings.inbox_path


# -- taken -----------------------------------------------------------------------------------------


def test_stable_jpeg_is_taken_moved_and_assessed(services: Services, inbox: Path) -> None:
    day = utc_day()
    data = image()
    (inbox / "IMG_0001.jpg").write_bytes(data)

    row = wait_for(lambda: capture_with(services, data), SOON)
    assert row["source"] == "hotfolder"
    assert row["media_type"] == "image/jpeg"
    assert row["laterality"] is None and row["patient_pk"] is None
    assert services.blobs.read(row["file_path"]) == data

    moved = wait_for(lambda: find(inbox / "processed", "IMG_0001.jpg"), SOON)
    assert moved.parent.parent == inbox / "processed"
    assert moved.parent.name in today_or_tomorrow(day)
    assert moved.read_bytes() == data
    assert not (inbox / "IMG_0001.jpg").exists()

    report = wait_for(
        lambda: services.store.one(
            "SELECT * FROM quality_reports WHERE capture_pk = ?", (row["id"],)
        ),
        SOON,
    )
    assert report["reasons"] is not None
    created = next(
        r for r in services.audit.rows() if json.loads(r["detail"]).get("capture_id") == row["id"]
    )  # the first event naming the capture is its arrival
    assert created["user_id"] == "hotfolder"
    assert created["outcome"] == 0
    assert json.loads(created["detail"])["sidecar"] is False
    assert services.audit.verify().ok


def test_sidecar_identity_is_honoured_and_moved_along(services: Services, inbox: Path) -> None:
    sidecar = {
        "patient_id": "P-77",
        "patient_name": "Doe^John",
        "birth_date": "19551231",
        "sex": "M",
        "laterality": "L",
    }
    (inbox / "IMG.json").write_text(json.dumps(sidecar), encoding="utf-8")
    data = image(seed=2)
    (inbox / "IMG.jpg").write_bytes(data)

    row = wait_for(lambda: capture_with(services, data), SOON)
    assert row["laterality"] == "L"
    assert row["laterality_source"] == "sidecar"
    patient = services.store.one("SELECT * FROM patients WHERE id = ?", (row["patient_pk"],))
    assert patient is not None
    assert {k: patient[k] for k in ("patient_id", "patient_name", "birth_date", "sex")} == {
        "patient_id": "P-77",
        "patient_name": "Doe^John",
        "birth_date": "19551231",
        "sex": "M",
    }
    moved = wait_for(lambda: find(inbox / "processed", "IMG.json"), SOON)
    assert json.loads(moved.read_text(encoding="utf-8")) == sidecar
    assert find(inbox / "processed", "IMG.jpg") is not None
    assert not (inbox / "IMG.json").exists()


def test_dicom_op_dropped_in_is_taken(services: Services, inbox: Path) -> None:
    data = op_bytes(fundus(seed=3, size=SMALL), laterality="L", patient_id="OP-1")
    (inbox / "EXPORT.dcm").write_bytes(data)

    row = wait_for(lambda: capture_with(services, data), SOON)
    assert row["source"] == "hotfolder"
    assert row["media_type"] == "application/dicom"
    assert row["laterality"] == "L" and row["laterality_source"] == "dicom"
    patient = services.store.one("SELECT * FROM patients WHERE id = ?", (row["patient_pk"],))
    assert patient is not None and patient["patient_id"] == "OP-1"
    wait_for(lambda: find(inbox / "processed", "EXPORT.dcm"), SOON)


def test_identical_file_dropped_twice_is_one_capture(services: Services, inbox: Path) -> None:
    data = image(seed=4)
    (inbox / "A.jpg").write_bytes(data)
    wait_for(lambda: find(inbox / "processed", "A.jpg"), SOON)
    (inbox / "B.jpg").write_bytes(data)
    wait_for(lambda: find(inbox / "processed", "B.jpg"), SOON)

    assert len(captures(services)) == 1
    assert refusals(services) == []


# -- not taken (yet) -----------------------------------------------------------------------------


def test_part_file_is_never_taken_until_renamed(services: Services, inbox: Path) -> None:
    data = image(seed=5)
    (inbox / "IMG_0002.jpg.part").write_bytes(data)
    # A file dropped after it is taken, so the scanner has looked at the .part for a while.
    control = image(seed=6)
    (inbox / "CONTROL.jpg").write_bytes(control)
    wait_for(lambda: find(inbox / "processed", "CONTROL.jpg"), SOON)
    time.sleep(4 * services.settings.hotfolder_stable_seconds)  # several more stable periods

    assert (inbox / "IMG_0002.jpg.part").read_bytes() == data
    assert capture_with(services, data) is None

    os.replace(inbox / "IMG_0002.jpg.part", inbox / "IMG_0002.jpg")
    row = wait_for(lambda: capture_with(services, data), SOON)
    assert row["source"] == "hotfolder"
    wait_for(lambda: find(inbox / "processed", "IMG_0002.jpg"), SOON)


def test_file_still_being_written_is_not_taken(idle: Services, folder: HotFolder) -> None:
    """A camera writing slowly: however long between its writes (here ten stable periods on the
    scanner's clock), a file that changed since the last look is never taken."""
    data = image(seed=7)
    step = len(data) // 10 + 1
    path = folder.inbox / "SLOW.jpg"
    now = 0.0
    with open(path, "wb") as fh:
        for start in range(0, len(data), step):
            fh.write(data[start : start + step])
            fh.flush()
            now += 10 * folder.stable_seconds
            assert folder.scan(now=now) == 0
            assert captures(idle) == []
    assert path.read_bytes() == data

    assert folder.scan(now=now + folder.stable_seconds) == 1
    (row,) = captures(idle)
    assert idle.blobs.read(row["file_path"]) == data
    assert refusals(idle) == []
    assert list(folder.rejected.rglob("*")) == []


def test_symlink_in_the_inbox_is_not_followed(
    services: Services, inbox: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "elsewhere" / "secret.jpg"
    secret.parent.mkdir()
    secret_data = image(seed=8)
    secret.write_bytes(secret_data)
    (inbox / "LINK.jpg").symlink_to(secret)
    control = image(seed=9)
    (inbox / "CONTROL.jpg").write_bytes(control)

    wait_for(lambda: find(inbox / "processed", "CONTROL.jpg"), SOON)
    time.sleep(4 * services.settings.hotfolder_stable_seconds)

    assert capture_with(services, secret_data) is None
    assert len(captures(services)) == 1
    assert (inbox / "LINK.jpg").is_symlink()
    assert secret.read_bytes() == secret_data
    assert find(inbox / "processed", "LINK.jpg") is None
    assert find(inbox / "rejected", "LINK.jpg") is None


# -- rejected ------------------------------------------------------------------------------------


def test_non_image_is_rejected_with_reason_and_audited(services: Services, inbox: Path) -> None:
    (inbox / "NOTES.jpg").write_text("this is not a picture\n", encoding="utf-8")

    reason_file = wait_for(lambda: find(inbox / "rejected", "NOTES.jpg.reason.txt"), SOON)
    assert reason_file.read_text(encoding="utf-8").split(":")[0] == "unrecognised_format"
    moved = find(inbox / "rejected", "NOTES.jpg")
    assert moved is not None and moved.parent == reason_file.parent
    assert moved.read_text(encoding="utf-8") == "this is not a picture\n"
    assert not (inbox / "NOTES.jpg").exists()
    (event,) = refusals(services)
    assert event["outcome"] == 4
    assert event["detail"]["refused"] == "unrecognised_format"
    assert event["detail"]["source"] == "hotfolder"
    assert event["user_id"] == "hotfolder"
    assert captures(services) == []
    assert services.audit.verify().ok


def test_unsupported_suffix_is_rejected(services: Services, inbox: Path) -> None:
    (inbox / "README.txt").write_text("camera notes\n", encoding="utf-8")
    reason_file = wait_for(lambda: find(inbox / "rejected", "README.txt.reason.txt"), SOON)
    assert reason_file.read_text(encoding="utf-8").split(":")[0] == "unsupported_format"
    assert [e["detail"]["refused"] for e in refusals(services)] == ["unsupported_format"]


BAD_SIDECARS = {
    "DATE": json.dumps({"patient_id": "P1", "birth_date": "1960-01-01"}),
    "LAT": json.dumps({"patient_id": "P1", "laterality": "X"}),
    "JSON": '{"patient_id": "P1", ',
}


def test_bad_sidecars_are_rejected(services: Services, inbox: Path) -> None:
    for stem, text in BAD_SIDECARS.items():
        (inbox / f"{stem}.json").write_text(text, encoding="utf-8")
        (inbox / f"{stem}.jpg").write_bytes(image(seed=len(stem)))

    for stem, text in BAD_SIDECARS.items():
        reason = wait_for(lambda s=stem: find(inbox / "rejected", f"{s}.jpg.reason.txt"), SOON)
        assert reason.read_text(encoding="utf-8").split(":")[0] == "bad_sidecar"
        sidecar = find(inbox / "rejected", f"{stem}.json")
        assert sidecar is not None and sidecar.read_text(encoding="utf-8") == text
    assert captures(services) == []
    assert sorted(e["detail"]["refused"] for e in refusals(services)) == ["bad_sidecar"] * 3
    assert all(e["outcome"] == 4 for e in refusals(services))


def test_sidecar_patient_id_traversal_is_only_text(
    services: Services, inbox: Path, tmp_path: Path
) -> None:
    (inbox / "TRAV.json").write_text(json.dumps({"patient_id": "../../etc"}), encoding="utf-8")
    data = image(seed=11)
    (inbox / "TRAV.jpg").write_bytes(data)

    row = wait_for(lambda: capture_with(services, data), SOON)
    patient = services.store.one("SELECT * FROM patients WHERE id = ?", (row["patient_pk"],))
    assert patient is not None and patient["patient_id"] == "../../etc"
    wait_for(lambda: find(inbox / "processed", "TRAV.json"), SOON)
    assert outside_files(tmp_path, services.settings.data_path) == []
    assert not (tmp_path / "etc").exists()


# -- unit style: HotFolder.scan with explicit monotonic times -------------------------------------


@pytest.fixture
def idle(settings: Settings) -> Iterator[Services]:
    """Services whose threads are not started (the test drives the scanner itself)."""
    svc = Services(settings)
    try:
        yield svc
    finally:
        svc.stop()


@pytest.fixture
def folder(idle: Services, tmp_path: Path) -> HotFolder:
    return HotFolder(idle.ingestor, tmp_path / "camera", stable_seconds=1.0, poll_seconds=0.05)


def scan_many(hot: HotFolder, start: float = 100.0, times: int = 6, step: float = 10.0) -> int:
    return sum(hot.scan(now=start + i * step) for i in range(times))


def test_scan_takes_a_file_only_after_it_stayed_unchanged(
    idle: Services, folder: HotFolder
) -> None:
    data = image(seed=12)
    path = folder.inbox / "IMG.jpg"
    path.write_bytes(data[:1000])

    assert folder.scan(now=0.0) == 0  # first seen
    assert folder.scan(now=0.9) == 0  # not yet stable
    with open(path, "ab") as fh:
        fh.write(data[1000:])
    assert folder.scan(now=1.5) == 0  # it grew: the clock starts again
    assert folder.scan(now=2.4) == 0
    assert folder.scan(now=2.5) == 1

    (row,) = captures(idle)
    assert idle.blobs.read(row["file_path"]) == data
    assert find(folder.processed, "IMG.jpg") is not None
    assert folder.scan(now=100.0) == 0


def test_scan_skips_part_hidden_and_temporary_files(idle: Services, folder: HotFolder) -> None:
    names = ["IMG.jpg.part", ".hidden.jpg", "IMG.tmp", "IMG.jpg.reason.txt"]
    for name in names:
        (folder.inbox / name).write_bytes(image(seed=13))

    assert scan_many(folder) == 0
    assert captures(idle) == []
    assert sorted(p.name for p in folder.inbox.iterdir() if p.is_file()) == sorted(names)


def test_scan_does_not_follow_symlinks(idle: Services, folder: HotFolder, tmp_path: Path) -> None:
    target = tmp_path / "outside.jpg"
    target.write_bytes(image(seed=14))
    (folder.inbox / "LINK.jpg").symlink_to(target)
    (folder.inbox / "DIR.jpg").symlink_to(tmp_path, target_is_directory=True)

    assert scan_many(folder) == 0
    assert captures(idle) == []
    assert (folder.inbox / "LINK.jpg").is_symlink()


@pytest.mark.parametrize("stem", sorted(BAD_SIDECARS))
def test_scan_rejects_bad_sidecar(idle: Services, folder: HotFolder, stem: str) -> None:
    (folder.inbox / "IMG.json").write_text(BAD_SIDECARS[stem], encoding="utf-8")
    (folder.inbox / "IMG.jpg").write_bytes(image(seed=15))

    assert scan_many(folder) == 1
    reason = find(folder.rejected, "IMG.jpg.reason.txt")
    assert reason is not None
    assert reason.read_text(encoding="utf-8").startswith("bad_sidecar: ")
    assert find(folder.rejected, "IMG.json") is not None
    assert captures(idle) == []
    assert [(e["outcome"], e["detail"]["refused"]) for e in refusals(idle)] == [(4, "bad_sidecar")]


def test_scan_does_not_follow_a_symlinked_sidecar(
    idle: Services, folder: HotFolder, tmp_path: Path
) -> None:
    outside = tmp_path / "identity.json"
    outside.write_text(json.dumps({"patient_id": "FROM-OUTSIDE"}), encoding="utf-8")
    (folder.inbox / "IMG.json").symlink_to(outside)
    (folder.inbox / "IMG.jpg").write_bytes(image(seed=16))

    assert scan_many(folder) == 1
    assert idle.store.scalar("SELECT count(*) FROM patients WHERE patient_id = 'FROM-OUTSIDE'") == 0
    # Refused as a bad sidecar, or taken without the identity: either way, handled.
    assert (find(folder.rejected, "IMG.jpg") or find(folder.processed, "IMG.jpg")) is not None
    assert outside.read_text(encoding="utf-8") == json.dumps({"patient_id": "FROM-OUTSIDE"})


def _malformed_op() -> bytes:
    """A DICOM OP whose Number of Frames is not a number."""
    raw = bytearray(op_bytes(fundus(seed=17, size=SMALL)))
    at = raw.index(b"\x28\x00\x08\x00IS")
    length = int.from_bytes(raw[at + 6 : at + 8], "little")
    raw[at + 6 : at + 8 + length] = (4).to_bytes(2, "little") + b"abc "
    return bytes(raw)


def test_scan_survives_a_file_that_breaks_the_decoder(idle: Services, folder: HotFolder) -> None:
    (folder.inbox / "POISON.dcm").write_bytes(_malformed_op())
    good = image(seed=18)
    (folder.inbox / "GOOD.jpg").write_bytes(good)

    assert scan_many(folder) == 2
    assert find(folder.rejected, "POISON.dcm.reason.txt") is not None
    assert capture_with(idle, good) is not None
    assert [e["outcome"] for e in refusals(idle)] == [4]


def test_scan_survives_a_deeply_nested_sidecar(idle: Services, folder: HotFolder) -> None:
    (folder.inbox / "A.json").write_text("[" * 50_000, encoding="utf-8")
    (folder.inbox / "A.jpg").write_bytes(image(seed=19))
    good = image(seed=20)
    (folder.inbox / "B.jpg").write_bytes(good)

    assert scan_many(folder) == 2
    reason = find(folder.rejected, "A.jpg.reason.txt")
    assert reason is not None
    assert reason.read_text(encoding="utf-8").startswith("bad_sidecar: ")
    assert capture_with(idle, good) is not None
    assert [(e["outcome"], e["detail"]["refused"]) for e in refusals(idle)] == [(4, "bad_sidecar")]


def test_processed_copies_go_after_the_kept_days_and_rejected_ones_stay(
    services: Services, inbox: Path
) -> None:
    import time as _time

    hotfolder = services.hotfolder
    assert hotfolder is not None and hotfolder.keep_processed_days == 7.0  # the default
    data = image(seed=5)
    (inbox / "IMG_0100.jpg").write_bytes(data)
    wait_for(lambda: find(inbox / "processed", "IMG_0100.jpg"), SOON)
    old_day = inbox / "processed" / "20200101"
    old_day.mkdir()
    (old_day / "IMG_OLD.jpg").write_bytes(b"old copy")
    (old_day / "IMG_OLD.json").write_text("{}")
    rejected_day = inbox / "rejected" / "20200101"
    rejected_day.mkdir(parents=True)
    (rejected_day / "bad.jpg").write_bytes(b"nothing else holds this")

    assert hotfolder.prune_processed() == 2
    assert not old_day.exists()
    assert find(inbox / "processed", "IMG_0100.jpg") is not None  # today's copy stays
    assert (rejected_day / "bad.jpg").exists()
    # eight days on, today's copy goes too; the stored capture stays
    assert hotfolder.prune_processed(now=_time.time() + 9 * 86400) == 1
    assert capture_with(services, data) is not None
    events = [json.loads(r["detail"]) for r in services.audit.rows() if r["event_id"] == "110105"]
    assert [e["files"] for e in events] == [2, 1]
    assert services.audit.verify().ok
