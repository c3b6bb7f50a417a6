"""End to end: a deterministic predictor over ~40 generated images → the report folder."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from appliance.validate import run_validation, write_report
from appliance.validate.page import is_demonstration, num, pct
from appliance.validate.run import load_rgb

HEADER = (
    "image,eye,field,dr_grade,referable_dr,dme,cdr,glaucoma_suspect,notch,gradable,quality,"
    "defect,camera,pigmentation,age_band,sex,seed"
)
MODEL = {"name": "red-mean", "version": "0.3.1", "sha256": "ab" * 32}
DEMO = {**MODEL, "card": {"status": "Demonstration model trained on synthetic images"}}
TOP_KEYS = {
    "schema",
    "n",
    "imageability",
    "imageability_truth",
    "referable_dr",
    "dme",
    "glaucoma",
    "dr_grade",
    "gradability",
    "calibration",
    "subgroups",
    "methods",
    "unreadable",
    "dataset",
    "title",
    "model",
    "generated_at",
    "figures",
}
PLOTS = [
    "roc_referable_dr.png",
    "roc_dme.png",
    "roc_glaucoma.png",
    "roc_gradability.png",
    "calibration_referable_dr.png",
]


def red_mean_predictor(rgb: np.ndarray) -> dict[str, Any]:
    """Brighter red means worse disease; a near-black picture is ungradable."""
    red = float(rgb[..., 0].mean()) / 255.0
    grade = int(np.clip(round((red * 255 - 60) / 40), 0, 4))
    return {
        "p_gradable": min(1.0, 4 * red),
        "gradable": red > 0.1,
        "dr_grade": grade,
        "p_referable": red,
        "referable": red > 0.45,
        "p_dme": 0.9 * red,
        "dme": red > 0.6,
        "cdr": float(rgb[..., 1].mean()) / 255.0,
        "p_glaucoma": float(rgb[..., 1].mean()) / 255.0,
        "glaucoma_suspect": float(rgb[..., 1].mean()) > 130,
    }


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """40 tiny PNGs with labels the predictor mostly gets right, one corrupt file, one BMP."""
    root = tmp_path / "data"
    (root / "img").mkdir(parents=True)
    rng = np.random.default_rng(7)
    lines = [HEADER]
    for i in range(40):
        grade, gradable = int(rng.integers(0, 5)), i % 8 != 0
        dme = int(grade >= 3 and i % 2 == 0)
        cdr = round(float(rng.uniform(0.2, 0.8)), 2)
        red = 60 + 40 * grade + int(rng.integers(-25, 25)) if gradable else 12
        green = int(np.clip(cdr * 255 + rng.integers(-20, 20), 0, 255))
        pixels = np.zeros((12, 12, 3), np.uint8)
        pixels[..., 0], pixels[..., 1] = np.clip(red, 0, 255), green
        Image.fromarray(pixels).save(root / "img" / f"{i:02d}.png")
        referable = int(grade >= 2 or dme)
        quality = "good" if gradable else "reject"
        lines.append(
            f"img/{i:02d}.png,{'RL'[i % 2]},macula,{grade},{referable},{dme},{cdr},"
            f"{int(cdr > 0.55)},0,{int(gradable)},{quality},,cam-{'AB'[i % 2]},"
            f"{rng.random():.2f},{['40-59', '60-79'][i % 3 == 0]},{'FM'[i % 3 == 0]},{i}"
        )
    (root / "img" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    Image.new("RGB", (8, 8)).save(root / "img" / "bitmap.png", format="BMP")  # not allowed
    for name in ("corrupt", "bitmap"):
        lines.append(f"img/{name}.png,R,macula,0,0,0,0.3,0,0,1,good,,cam-A,0.5,40-59,F,0")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root


def test_end_to_end_report_folder(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    seen: list[tuple[int, int, str]] = []
    report = run_validation(
        dataset,
        None,
        "synth",
        red_mean_predictor,
        out,
        model_info=DEMO,
        progress=lambda done, total, image: seen.append((done, total, image)),
    )
    assert seen[0] == (1, 42, "img/00.png") and seen[-1][:2] == (42, 42)
    assert report["n"] == 40
    assert report["unreadable"]["count"] == 2
    assert [u["image"] for u in report["unreadable"]["images"]] == [
        "img/corrupt.png",
        "img/bitmap.png",
    ]

    document = json.loads((out / "report.json").read_text())
    assert set(document) == TOP_KEYS
    assert document["model"] == DEMO and document["figures"] == PLOTS
    assert document["dataset"]["labels"] == str(dataset / "labels.csv")
    for key in ("referable_dr", "dme", "glaucoma", "gradability", "dr_grade", "calibration"):
        assert document[key] is not None, key
    referable = document["referable_dr"]
    assert referable["n"] == 35 and referable["ungradable_excluded"]["total"] == 5
    assert referable["sensitivity"]["value"] > 0.8 and referable["auroc"]["value"] > 0.9
    assert document["dr_grade"]["quadratic_weighted_kappa"]["value"] > 0.7
    assert set(document["subgroups"]) == {"age_band", "camera", "eye", "pigmentation", "sex"}
    assert document["imageability"]["value"] == pytest.approx(35 / 40)

    for name in PLOTS:
        with Image.open(out / name) as img:
            img.verify()
        with Image.open(out / name) as img:
            assert (img.format, img.size) == ("PNG", (640, 480))
            assert len(img.convert("RGB").getcolors(1 << 16) or []) > 10  # not a blank canvas

    with (out / "predictions.csv").open() as fh:
        predictions = list(csv.DictReader(fh))
    assert len(predictions) == 40 and predictions[0]["image"] == "img/00.png"

    page = (out / "report.html").read_text()
    for metric in ("sensitivity", "specificity", "ppv", "npv"):
        assert pct(referable[metric]) in page
    auroc = referable["auroc"]
    assert num(auroc) in page and f"{auroc['value']:.3f}" in num(auroc)
    assert f"({auroc['ci_low']:.3f}&ndash;{auroc['ci_high']:.3f})" in num(auroc)
    assert f"{100 * referable['sensitivity']['value']:.1f}%" in page
    kappa = document["dr_grade"]["quadratic_weighted_kappa"]["value"]
    assert f"{kappa:.3f}" in page
    assert f"{document['glaucoma']['cdr_mae']['value']:.3f}" in page
    assert 'class="demo">DEMONSTRATION MODEL' in page
    assert MODEL["sha256"] in page and "0.3.1" in page
    assert "<script" not in page.lower() and "http://" not in page and "https://" not in page
    assert sorted(re.findall(r'<img src="([^"]+)"', page)) == sorted(PLOTS)


def test_no_demonstration_banner_for_a_clinical_model(dataset: Path, tmp_path: Path) -> None:
    run_validation(dataset, None, "synth", red_mean_predictor, tmp_path / "o", model_info=MODEL)
    assert "DEMONSTRATION" not in (tmp_path / "o" / "report.html").read_text()


def test_custom_loader_and_failures_it_raises(dataset: Path, tmp_path: Path) -> None:
    def loader(path: Path) -> np.ndarray:
        if path.name.startswith("1"):
            raise OSError("camera export damaged")
        return np.full((8, 8, 3), 200, np.uint8)

    report = run_validation(
        dataset,
        dataset / "labels.csv",
        "synth",
        lambda rgb: {"referable": True},
        tmp_path / "o",
        model_info=MODEL,
        load_image=loader,
    )
    assert report["unreadable"]["count"] == 10
    assert report["unreadable"]["images"][0] == {
        "image": "img/10.png",
        "reason": "OSError: camera export damaged",
    }
    assert report["n"] == 32  # 42 rows, 10 unreadable
    assert report["referable_dr"]["auroc"]["reason"] == "the model gives no 'p_referable'"
    figures = json.loads((tmp_path / "o" / "report.json").read_text())["figures"]
    assert figures == []


def test_a_failing_predictor_stops_the_run_naming_the_image(dataset: Path, tmp_path: Path) -> None:
    def broken(rgb: np.ndarray) -> dict[str, Any]:
        raise RuntimeError("session closed")

    with pytest.raises(RuntimeError, match="the predictor failed on img/00.png: session closed"):
        run_validation(dataset, None, "synth", broken, tmp_path / "o", model_info=MODEL)
    with pytest.raises(ValueError, match="prediction for img/00.png: 'p_referable' must be"):
        run_validation(
            dataset, None, "synth", lambda rgb: {"p_referable": 2}, tmp_path / "o", model_info=MODEL
        )
    assert not (tmp_path / "o" / "report.json").exists()


def test_write_report_with_nothing_assessable(tmp_path: Path) -> None:
    report = {"schema": "appliance.validate/1", "n": 0, "subgroups": {}, "methods": {}}
    write_report(report, tmp_path / "r", title="Empty <run>", model_info={"name": "m&m"})
    page = (tmp_path / "r" / "report.html").read_text()
    assert "<title>Empty &lt;run&gt;</title>" in page and "m&amp;m" in page
    assert "not assessed" in page
    assert json.loads((tmp_path / "r" / "report.json").read_text())["figures"] == []


def test_models_listed_per_task_are_shown_and_their_disclaimer_honoured(tmp_path: Path) -> None:
    disclaimer = "demonstration model trained on synthetic images — not clinically validated"
    info = {
        "models": [
            {"name": "dr-net", "version": "1.0", "task": "dr", "disclaimer": disclaimer},
            {"name": "grad-net", "version": "2.1", "task": "gradability", "sha256": "cd" * 32},
        ]
    }
    report = {"schema": "appliance.validate/1", "n": 0, "subgroups": {}, "methods": {}}
    write_report(report, tmp_path, title="t", model_info=info)
    page = (tmp_path / "report.html").read_text()
    assert 'class="demo"' in page
    assert "<code>dr-net</code>" in page and "<code>grad-net</code>" in page
    assert "cd" * 32 in page and "<th>task</th>" in page


@pytest.mark.parametrize(
    ("info", "demo"),
    [
        ({"name": "m", "demonstration": True}, True),
        ({"name": "m", "card": {"intended_use": "Demonstration only"}}, True),
        ({"name": "m", "card": {"intended_use": "Screening adults with diabetes"}}, False),
        ({"name": "m", "notes": "validated at site A"}, False),
        ({"name": "m", "demonstration": "no"}, False),
    ],
)
def test_demonstration_detection(info: dict[str, Any], demo: bool) -> None:
    assert is_demonstration(info) is demo


def test_default_loader_gives_rgb_uint8(tmp_path: Path) -> None:
    deep = np.linspace(0, 65535, 64, dtype=np.uint16).reshape(8, 8)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    Image.new("RGBA", (5, 4), (10, 20, 30, 0)).save(tmp_path / "alpha.tiff")
    Image.new("RGB", (6, 3), (200, 100, 50)).save(tmp_path / "photo.jpg", quality=95)
    rgb = load_rgb(tmp_path / "deep.png")
    assert rgb.dtype == np.uint8 and rgb.shape == (8, 8, 3) and rgb.max() == 255
    assert load_rgb(tmp_path / "alpha.tiff")[0, 0].tolist() == [10, 20, 30]
    assert load_rgb(tmp_path / "photo.jpg").shape == (3, 6, 3)
    Image.new("RGB", (4, 4)).save(tmp_path / "pic.gif")
    with pytest.raises(OSError):
        load_rgb(tmp_path / "pic.gif")


def test_calibration_plot_survives_a_nearly_empty_bin(tmp_path: Path) -> None:
    from appliance.validate.plots import calibration_png

    bins = [
        {"bin_low": i / 10, "bin_high": (i + 1) / 10, "n": n, "mean_predicted": i / 10 + 0.05,
         "observed": 0.5}
        for i, n in enumerate([1000, 1, 0, 0, 0, 0, 0, 0, 0, 3])
    ]  # fmt: skip
    calibration_png(tmp_path / "c.png", title="t", bins=bins, ece=0.1, n=1004)
    assert (tmp_path / "c.png").stat().st_size > 0
