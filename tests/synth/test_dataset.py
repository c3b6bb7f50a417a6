"""Writing a labelled dataset: files, CSV columns and types, determinism, workers, CLI."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from appliance.synth.camera import CAMERAS, decode_jpeg
from appliance.synth.case import render_case
from appliance.synth.dataset import (
    COLUMNS,
    add_arguments,
    case_for,
    main,
    run,
    write_dataset,
)

EXPECTED_COLUMNS = (
    "image,eye,field,dr_grade,referable_dr,dme,cdr,glaucoma_suspect,notch,gradable,quality,"
    "defect,camera,pigmentation,age_band,sex,seed"
).split(",")
SIZE = (256, 320)  # (height, width)


def _rows(labels: Path) -> list[dict[str, str]]:
    with labels.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*.*"))}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "ds"
    labels = write_dataset(out, 10, seed=3, size=SIZE)
    assert labels == out / "labels.csv"
    return out


def test_csv_has_exactly_the_columns_and_types(dataset: Path) -> None:
    with (dataset / "labels.csv").open(encoding="utf-8") as handle:
        header = handle.readline().strip()
    assert header.split(",") == EXPECTED_COLUMNS == list(COLUMNS)
    rows = _rows(dataset / "labels.csv")
    assert [r["image"] for r in rows] == [f"images/{i:06d}.jpg" for i in range(10)]
    for row in rows:
        assert row["eye"] in ("R", "L")
        assert row["field"] in ("macula", "disc")
        assert int(row["dr_grade"]) in range(5)
        for key in ("referable_dr", "dme", "glaucoma_suspect", "notch", "gradable"):
            assert row[key] in ("0", "1"), key
        assert len(row["cdr"].split(".")[1]) == 3 and 0.1 <= float(row["cdr"]) <= 0.9
        assert row["quality"] in ("good", "usable", "reject")
        assert (row["gradable"] == "1") is (row["quality"] != "reject")
        assert (row["referable_dr"] == "1") is (int(row["dr_grade"]) >= 2 or row["dme"] == "1")
        glaucoma = float(row["cdr"]) >= 0.6 or row["notch"] == "1"
        assert (row["glaucoma_suspect"] == "1") is glaucoma
        assert row["age_band"] in ("20-39", "40-59", "60-79", "80+")
        assert row["sex"] in ("F", "M")
        assert int(row["seed"]) >= 0


def test_images_decode_to_the_rendered_cases(dataset: Path) -> None:
    rows = _rows(dataset / "labels.csv")
    for index in (0, 7):
        path = dataset / rows[index]["image"]
        with Image.open(path) as img:
            assert img.format == "JPEG" and img.size == (SIZE[1], SIZE[0])
        case = case_for(3, index, SIZE)
        assert str(case.seed) == rows[index]["seed"]
        assert np.array_equal(decode_jpeg(path.read_bytes()), render_case(case))


def test_same_seed_same_files_and_image_depends_only_on_seed_and_index(
    dataset: Path, tmp_path: Path
) -> None:
    again = tmp_path / "again"
    write_dataset(again, 10, seed=3, size=SIZE)
    assert _files(again) == _files(dataset)
    longer = tmp_path / "longer"
    write_dataset(longer, 12, seed=3, size=SIZE)
    first = _files(dataset)
    assert all(_files(longer)[name] == data for name, data in first.items() if "images/" in name)
    other = tmp_path / "other"
    write_dataset(other, 2, seed=4, size=SIZE)
    assert _files(other)["images/000000.jpg"] != first["images/000000.jpg"]


def test_two_workers_write_the_same_dataset(dataset: Path, tmp_path: Path) -> None:
    parallel = tmp_path / "parallel"
    write_dataset(parallel, 10, seed=3, size=SIZE, workers=2)
    assert _files(parallel) == _files(dataset)


def test_native_size_follows_the_camera() -> None:
    for index in range(5):
        case = case_for(0, index)
        assert case.size == CAMERAS[case.camera].size


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": -1}, "n must be >= 0"),
        ({"workers": 0}, "workers must be >= 1"),
        ({"size": (10, 10)}, "size must be"),
    ],
)
def test_bad_dataset_arguments(tmp_path: Path, kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"out": tmp_path, "n": 1, "seed": 0, **kwargs}
    with pytest.raises(ValueError, match=message):
        write_dataset(**args)  # type: ignore[arg-type]


def test_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    assert main(["--out", str(out), "--n", "3", "--seed", "9", "--size", "320x256"]) == 0
    assert "wrote 3 images" in capsys.readouterr().out
    rows = _rows(out / "labels.csv")
    assert len(rows) == 3
    with Image.open(out / rows[0]["image"]) as img:
        assert img.size == (320, 256)  # --size is WIDTHxHEIGHT

    parser = argparse.ArgumentParser(prog="appliance synth")
    add_arguments(parser)
    args = parser.parse_args(["--out", str(tmp_path / "x"), "--n", "0", "--workers", "2"])
    assert (args.seed, args.size, args.workers) == (0, None, 2)
    assert run(args) == 0
    for bad in (["--size", "big"], ["--size", "10x10"], ["--workers", "0"], ["--n", "-2"]):
        with pytest.raises(SystemExit):
            parser.parse_args(["--out", "o", "--n", "1", *bad])
