"""`appliance validate --oct` on a small synthetic OCT set (CI): the report's structure, and its
figures recomputed here from the set's own truth files and the measurements.

Tolerances: predictions.csv carries 7 significant digits, so a CST MAE recomputed from it
agrees within 0.01 µm; boundary MAE is recomputed from the truth .npz files and a fresh
``measure_oct`` of the same volumes and agrees within 1e-6 px; proportions agree exactly.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from appliance.cli import main
from appliance.config import Settings
from appliance.inference.oct.fluid_net import FluidNet
from appliance.inference.oct.measure import measure_oct

N, SEED = 10, 16
TOP_KEYS = {
    "schema", "n", "population", "ungradable_excluded", "imageability", "imageability_truth",
    "cst", "boundaries", "ci_dme", "fluid_centre", "fluid_any", "quality", "targets",
    "methods", "unreadable", "dataset", "measurement", "title", "generated_at", "figures",
}  # fmt: skip
TARGET_KEYS = [
    "cst_mae_um", "ilm_mae_px", "rpe_mae_px", "ci_dme_sensitivity", "ci_dme_specificity",
    "quality_auroc",
]  # fmt: skip


@pytest.fixture(scope="module")
def oct_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("oct")
    dataset, out = root / "set", root / "report"
    args = ["--out", str(dataset), "--n", str(N), "--seed", str(SEED), "--geometry", "small"]
    assert main(["synth", "--oct", *args]) == 0
    assert (
        main(["validate", "--oct", str(dataset), "--report", str(out), "--bootstrap", "200"]) == 0
    )
    return dataset, out, json.loads((out / "report.json").read_text())


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_the_report_has_its_documented_shape(oct_run: tuple[Path, Path, dict[str, Any]]) -> None:
    dataset, out, report = oct_run
    assert set(report) == TOP_KEYS
    assert report["schema"] == "appliance.validate.oct/1"
    assert report["n"] == N and report["unreadable"] == {"count": 0, "volumes": []}
    assert [t["key"] for t in report["targets"]] == TARGET_KEYS
    for target in report["targets"]:
        assert target["met"] is (
            target["value"] <= target["target"]
            if target["comparison"] == "<="
            else target["value"] >= target["target"]
        )
    assert "demonstration" in report["measurement"]["status"]
    # fluid measured as the appliance measures it: by the installed oct-fluid model
    installed = FluidNet.find(Settings().models_path)
    assert installed is not None and report["measurement"]["fluid"] == installed.method
    sha = report["measurement"]["model_files"]["sha256"]
    assert installed.method.endswith(f"sha256 {sha[:12]})")
    text = (out / "report.txt").read_text()
    assert "Targets (issue #16" in text and "CST MAE" in text
    assert text.count(" met") + text.count("NOT MET") >= len(TARGET_KEYS)
    for name in report["figures"]:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_inputs_are_hashed(oct_run: tuple[Path, Path, dict[str, Any]]) -> None:
    dataset, _, report = oct_run
    ds = report["dataset"]
    assert ds["labels_sha256"] == hashlib.sha256((dataset / "labels.csv").read_bytes()).hexdigest()
    assert len(ds["files"]) == 2 * N  # a volume and its truth each
    for entry in ds["files"]:
        assert hashlib.sha256(Path(entry["path"]).read_bytes()).hexdigest() == entry["sha256"]


def test_figures_are_recomputed_from_the_set(oct_run: tuple[Path, Path, dict[str, Any]]) -> None:
    dataset, out, report = oct_run
    labels = {row["volume"]: row for row in _rows(dataset / "labels.csv")}
    preds = _rows(out / "predictions.csv")
    kept = [p for p in preds if p["reference_gradable"] == "1" and p["quality_gradable"] == "1"]
    assert report["cst"]["mae_um"]["n"] == len(kept) > 0
    errors = [abs(float(p["cst_um"]) - float(labels[p["volume"]]["cst_um"])) for p in kept]
    assert report["cst"]["mae_um"]["value"] == pytest.approx(np.mean(errors), abs=0.01)
    # DME by the rule at 300 µm, recomputed from the reference labels and the measurements.
    truth = [labels[p["volume"]]["ci_dme"] == "1" for p in kept]
    called = [float(p["cst_um"]) >= 300 or float(p["p_fluid_centre"]) >= 0.5 for p in kept]
    tp = sum(t and c for t, c in zip(truth, called, strict=True))
    tn = sum(not t and not c for t, c in zip(truth, called, strict=True))
    assert report["ci_dme"]["sensitivity"]["numerator"] == tp
    assert report["ci_dme"]["sensitivity"]["denominator"] == sum(truth)
    assert report["ci_dme"]["specificity"]["numerator"] == tn
    # Boundaries: a fresh measurement of the kept volumes against their truth files.
    sums, counts = np.zeros(2), np.zeros(2)
    for p in kept:
        row = labels[p["volume"]]
        volume = np.load(dataset / row["volume"])
        spacing = tuple(float(row[f"spacing_{a}_mm"]) for a in ("frame", "axial", "lateral"))
        m = measure_oct(volume, spacing, row["eye"])  # type: ignore[arg-type]
        with np.load(dataset / row["truth"]) as truth_npz:
            for k, (measured, ref) in enumerate(
                ((m.ilm_px, truth_npz["ilm_px"]), (m.rpe_px, truth_npz["rpe_px"]))
            ):
                ok = np.isfinite(ref) & np.isfinite(measured) & (ref >= 0)
                ok &= ref < volume.shape[1]
                sums[k] += np.abs(measured - ref)[ok].sum()
                counts[k] += ok.sum()
    for k, name in enumerate(("ilm", "rpe")):
        assert report["boundaries"][name]["mae_px"]["value"] == pytest.approx(
            sums[k] / counts[k], abs=1e-6
        )
    # Quality: every volume with a reference gradability label.
    assert report["quality"]["n"] == N
    ungradable = sum(row["gradable"] == "0" for row in labels.values())
    assert report["quality"]["auroc"]["n_positive"] == ungradable


def test_the_cst_threshold_is_an_argument(
    oct_run: tuple[Path, Path, dict[str, Any]], tmp_path: Path
) -> None:
    dataset, out, report = oct_run
    strict = tmp_path / "strict"
    args = ["--report", str(strict), "--bootstrap", "0", "--cst-threshold-um", "250"]
    assert main(["validate", "--oct", str(dataset), *args]) == 0
    other = json.loads((strict / "report.json").read_text())
    assert other["ci_dme"]["rule"]["cst_threshold_um"] == 250
    labels = {row["volume"]: row for row in _rows(dataset / "labels.csv")}
    kept = [
        p
        for p in _rows(out / "predictions.csv")
        if p["reference_gradable"] == "1" and p["quality_gradable"] == "1"
    ]
    positives = sum(
        float(labels[p["volume"]]["cst_um"]) >= 250 or labels[p["volume"]]["centre_fluid"] == "1"
        for p in kept
    )
    assert other["ci_dme"]["sensitivity"]["denominator"] == positives
    assert other["quality"]["auroc"]["ci_low"] is None  # --bootstrap 0: no intervals


def test_a_bad_set_is_answered(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "labels.csv").write_text("volume,eye\nx.npy,R\n")
    assert main(["validate", "--oct", str(tmp_path), "--report", str(tmp_path / "r")]) == 2
    assert "missing column(s)" in capsys.readouterr().err
