"""The `appliance` command line, run as a separate process where it matters."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from appliance.cli import main
from appliance.inference.card import find_cards
from appliance.synth import DEGRADATIONS
from tests.conftest import free_port, fundus, jpeg_bytes, png_bytes, wait_for

CLI = [sys.executable, "-m", "appliance.cli"]


def _screen(paths: list[Path], capsys: pytest.CaptureFixture[str]) -> dict:
    main(["screen", "--json", *map(str, paths)])
    return json.loads(capsys.readouterr().out)


@pytest.fixture
def no_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APPLIANCE_MODELS_DIR", str(tmp_path / "no-models"))


@pytest.mark.usefixtures("no_models")
def test_screen_clean_and_degraded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clean = fundus(seed=11, size=(768, 1024))
    files = {"clean": tmp_path / "clean.jpg"}
    files["clean"].write_bytes(jpeg_bytes(clean))
    for reason, degrade in DEGRADATIONS.items():
        if reason == "not_fundus":
            continue
        files[reason] = tmp_path / f"{reason}.png"
        files[reason].write_bytes(png_bytes(degrade(clean)))
    out = _screen(list(files.values()), capsys)
    by_path = {entry["path"]: entry for entry in out["images"]}
    assert by_path[str(files["clean"])]["gradable"] is True
    assert by_path[str(files["clean"])]["quality"]["reasons"] == []
    for reason, path in files.items():
        if reason == "clean":
            continue
        entry = by_path[str(path)]
        assert entry["gradable"] is False, reason
        assert reason in entry["quality"]["reasons"]
        assert entry["quality"]["guidance"] and 0 <= entry["quality"]["score"] < 0.5
    assert out["visit"]["outcome"]["code"] == "no_model"
    assert "No screening model installed" in out["visit"]["outcome"]["text"]


def test_screen_with_the_shipped_models_gives_the_documented_schema(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from appliance.synth.case import render_case
    from appliance.synth.dataset import case_for

    paths = []
    for eye in ("L", "R"):
        case = next(
            c for c in (case_for(5150, i, (600, 800)) for i in range(200))
            if c.eye == eye and c.field == "macula" and c.defect is None and c.dr_grade == 0
            and not c.glaucoma_suspect
        )  # fmt: skip
        paths.append(tmp_path / f"{eye}.png")
        paths[-1].write_bytes(png_bytes(render_case(case)))
        paths[-1].with_suffix(".json").write_text(json.dumps({"laterality": eye}))
    assert main(["screen", "--json", "--heatmaps", str(tmp_path / "maps"), *map(str, paths)]) == 0
    out = json.loads(capsys.readouterr().out)
    for entry, eye in zip(out["images"], ("L", "R"), strict=True):
        assert entry["gradable"] is True and entry["laterality"] == eye
        assert entry["laterality_source"] == "sidecar" and entry["laterality_mismatch"] is False
        assert entry["field"] == "macula"
        assert set(entry["dr"]) >= {"grade", "p_referable", "referable"}
        assert set(entry["dme"]) == {"p", "present"}
        assert set(entry["glaucoma"]) == {"cdr", "p_suspect", "suspect"}
        assert Path(entry["heatmap"]).is_file()
    outcome = out["visit"]["outcome"]
    assert outcome["code"] in {"refer", "rescreen", "retake", "glaucoma_refer", "incomplete"}
    assert outcome["rule_set"].startswith("primary-care-dr-screening@")
    if outcome["code"] == "rescreen":
        assert outcome["recall_months"] == 12


def test_screen_reports_unreadable_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "notes.dcm"
    bad.write_text("not an image")
    assert main(["screen", "--json", str(bad)]) == 1
    (entry,) = json.loads(capsys.readouterr().out)["images"]
    assert entry["error"] == "unrecognised_format"


def test_settings_markdown_is_the_docs_file(capsys: pytest.CaptureFixture[str]) -> None:
    main(["settings", "--markdown"])
    docs = Path(__file__).resolve().parents[2] / "docs" / "settings.md"
    assert capsys.readouterr().out == docs.read_text()


def test_serve_answers_healthz_and_captures_list_and_db_check(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "APPLIANCE_DATA_DIR": str(tmp_path / "var"),
        "APPLIANCE_WEB_PORT": str(free_port()),
        "APPLIANCE_DICOM_PORT": str(free_port()),
        "APPLIANCE_DICOM_HOST": "127.0.0.1",
        "APPLIANCE_API_TOKEN": "t0ken",
        "APPLIANCE_MIN_FREE_DISK_MB": "0",
    }
    proc = subprocess.Popen(
        [*CLI, "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{env['APPLIANCE_WEB_PORT']}"
    try:

        def healthy() -> dict | None:
            try:
                with urllib.request.urlopen(url + "/healthz", timeout=2) as response:
                    return json.loads(response.read())
            except OSError:
                return None

        health = wait_for(healthy, timeout=30, interval=0.2)
        assert health["status"] == "ok" and health["captures"] == 0
        assert health["screening_model"] == "installed"
        shipped = {card.task for card in find_cards(Path(__file__).parents[2] / "models")}
        assert {m["task"] for m in health["models"]} == shipped  # fundus and oct-fluid
        assert {m["provider"] for m in health["models"]} == {"CPUExecutionProvider"}
        with socket.create_connection(("127.0.0.1", int(env["APPLIANCE_DICOM_PORT"])), timeout=5):
            pass  # the SCP listens
        inbox = tmp_path / "var" / "inbox"
        (inbox / "a.jpg").write_bytes(jpeg_bytes(fundus(seed=21, size=(384, 512))))
        wait_for(
            lambda: (healthy() or {}).get("captures") == 1 and healthy()["pending_analysis"] == 0,
            timeout=30,
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=30)[0].decode()
    assert proc.returncode == 0, output
    listed = subprocess.run(
        [*CLI, "captures", "list", "--json"], env=env, capture_output=True, text=True
    )
    (row,) = json.loads(listed.stdout)
    assert row["source"] == "hotfolder" and row["gradable"] is True
    check = subprocess.run([*CLI, "db", "check"], env=env, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    verify = subprocess.run([*CLI, "audit", "verify"], env=env, capture_output=True, text=True)
    assert verify.returncode == 0, verify.stderr
    events = subprocess.run(
        [*CLI, "audit", "export"], env=env, capture_output=True, text=True
    ).stdout
    kinds = [(e["event_id"], e["event_type"]) for e in map(json.loads, events.splitlines())]
    assert kinds[0] == ("110100", "110120") and ("110100", "110121") in kinds  # start, stop
    blob = next((tmp_path / "var" / "blobs").rglob("*.jpg"))
    blob.unlink()
    check = subprocess.run([*CLI, "db", "check"], env=env, capture_output=True, text=True)
    assert check.returncode == 1 and "file missing" in check.stderr


def test_synth_writes_images_and_labels(tmp_path: Path) -> None:
    out = tmp_path / "synth"
    assert main(["synth", "--out", str(out), "--n", "4", "--seed", "9", "--size", "320x240"]) == 0
    lines = (out / "labels.csv").read_text().splitlines()
    header = lines[0].split(",")
    for column in (
        "image", "eye", "dr_grade", "referable_dr", "dme", "cdr", "glaucoma_suspect",
        "gradable", "camera", "pigmentation", "age_band", "sex",
    ):  # fmt: skip
        assert column in header
    assert len(lines) == 5
    first = dict(zip(header, lines[1].split(","), strict=True))
    assert (out / first["image"]).is_file()


def test_screen_flags_a_wrong_eye_label(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from appliance.synth.case import render_case
    from appliance.synth.dataset import case_for

    case = next(
        c for c in (case_for(7170, i, (600, 800)) for i in range(200))
        if c.eye == "R" and c.field == "macula" and c.defect is None
    )  # fmt: skip
    path = tmp_path / "labelled-left.png"
    path.write_bytes(png_bytes(render_case(case)))
    path.with_suffix(".json").write_text(json.dumps({"laterality": "L"}))
    assert main(["screen", "--json", str(path)]) == 0
    out = json.loads(capsys.readouterr().out)
    (entry,) = out["images"]
    assert entry["laterality"] == "L" and entry["laterality_detected"] == "R"
    assert entry["laterality_mismatch"] is True
    assert any("Check the eye label" in prompt for prompt in out["visit"]["outcome"]["prompts"])
