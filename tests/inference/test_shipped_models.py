"""The shipped demonstration models: cards, hashes, refusal of tampered files, and a real run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from appliance import config
from appliance.inference import DISCLAIMER, ModelIntegrityError, Screener, find_cards
from appliance.inference.card import FUNDUS_TASKS
from appliance.inference.oct.fluid_net import TASK
from appliance.synth.dataset import write_dataset

MODELS = Path(__file__).resolve().parents[2] / "models"
CARDS = find_cards(MODELS)


def test_every_task_has_a_card() -> None:
    fundus = sorted(card.task for card in CARDS if card.task in FUNDUS_TASKS)
    assert fundus == ["dr", "glaucoma", "gradability"]
    # and at most the OCT fluid model, installed by its recipe's rule (test_oct_fluid_candidate)
    assert sorted(card.task for card in CARDS if card.task not in FUNDUS_TASKS) in ([], [TASK])


@pytest.mark.parametrize("card", CARDS, ids=lambda c: c.task)
def test_card_is_complete_and_files_match(card: Any) -> None:
    assert card.data["disclaimer"] == DISCLAIMER
    for variant in ("int8", "fp32"):
        card.verify(variant)  # raises on a hash mismatch
    for key in ("input", "outputs", "thresholds", "training", "intended_use", "limitations"):
        assert card.data[key], key
    for threshold in card.data["thresholds"].values():
        assert 0 < threshold["value"] < 1 and threshold["chosen_at"]
    assert card.data["int8_fp32_agreement"]["decision_agreement"] >= 0.95
    assert card.data["validation"] is not None


def test_shipped_files_fit_the_budget() -> None:
    total = sum(path.stat().st_size for path in MODELS.glob("*.onnx"))
    assert total <= 40 * 1024 * 1024


@pytest.fixture(scope="module")
def small_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("synth") / "set"
    write_dataset(folder, n=24, seed=424242, size=(480, 640))
    return folder


def test_models_run_on_generated_images(small_set: Path) -> None:
    screener = Screener.load(MODELS, "int8")
    assert screener.screening_available
    assert {m["provider"] for m in screener.describe()} == {"CPUExecutionProvider"}
    from PIL import Image

    for path in sorted((small_set / "images").iterdir())[:24]:
        rgb = np.asarray(Image.open(path).convert("RGB"))
        result = screener.analyse(rgb)
        assert 0 <= result["p_referable"] <= 1 and result["dr_grade"] in range(5)
        assert 0 <= result["cdr"] <= 1 and 0 <= result["p_gradable"] <= 1
        assert result["heatmap"].ndim == 2 and 0 <= result["heatmap"].max() <= 1


def test_a_tampered_model_is_refused_and_audited(tmp_path: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(MODELS, models, ignore=shutil.ignore_patterns("validation", "recipe"))
    target = models / "dr.int8.onnx"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match="does not match its card"):
        Screener.load(models, "int8")
    from appliance.runtime.services import Services

    settings = config.load(
        environ={}, data_dir=str(tmp_path / "var"), models_dir=str(models), min_free_disk_mb=0
    )
    services = Services(settings)
    try:
        health = services.health()
        assert health["screening_model"].startswith("refused")
        assert [m for m in health["models"] if m["task"] in FUNDUS_TASKS] == []
        alert = services.store.one("SELECT * FROM audit_events WHERE event_id = '110113'")
        assert json.loads(alert["detail"])["alert"] == "model_integrity"
    finally:
        services.stop()


def test_validate_cli_end_to_end(
    small_set: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from appliance.cli import main

    out = tmp_path / "report"
    assert (
        main(["validate", "--dataset", str(small_set), "--format", "synth", "--report", str(out)])
        == 0
    )
    report = json.loads((out / "report.json").read_text())
    for key in ("referable_dr", "gradability", "glaucoma", "imageability", "subgroups"):
        assert key in report
    assert report["n"] == 24
    assert "sensitivity" in report["referable_dr"] and "auroc" in report["gradability"]
    assert "cdr_mae" in report["glaucoma"]
    html = (out / "report.html").read_text()
    assert "not clinically validated" in html


def test_an_accelerator_failing_at_run_time_falls_back_to_cpu() -> None:
    from appliance.inference.runtime import ModelSession

    card = next(c for c in CARDS if c.task == "glaucoma")
    session = ModelSession(card, "int8", ["CPUExecutionProvider"])
    size = card.input["size"]
    tensor = np.zeros((1, 3, size, size), np.float32)
    expected = session.predict(tensor)

    class Broken:  # what a CUDA/TensorRT session that fails mid-run looks like to us
        def run(self, *args: Any) -> Any:
            raise RuntimeError("CUDA failure 700: an illegal memory access")

    session.session = Broken()  # type: ignore[assignment]
    session.providers_in_use = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    got = session.predict(tensor)
    assert session.providers_in_use[0] == "CPUExecutionProvider"
    assert session.fallback_reason == "CUDAExecutionProvider failed: RuntimeError"
    assert np.allclose(got["cdr"], expected["cdr"])


@pytest.mark.parametrize("shape", [(24, 32, 3), (300, 400)], ids=["tiny", "grey"])
def test_models_take_odd_images_without_failing(shape: tuple[int, ...]) -> None:
    """Any size is cropped and resized by pre-processing; greyscale arrives stacked to RGB."""
    screener = Screener.load(MODELS, "int8")
    rgb = np.random.default_rng(1).integers(0, 255, size=shape, dtype=np.uint8)
    if rgb.ndim == 2:
        rgb = np.stack([rgb] * 3, axis=-1)
    result = screener.analyse(rgb)
    assert 0 <= result["p_referable"] <= 1 and 0 <= result["cdr"] <= 1


def test_a_card_naming_an_unknown_colour_normalisation_is_refused(tmp_path: Path) -> None:
    """A site's model whose card asks for pre-processing the appliance cannot do is refused at
    load, not fed something else."""
    import json

    models = tmp_path / "models"
    shutil.copytree(MODELS, models, ignore=shutil.ignore_patterns("validation", "recipe"))
    card = json.loads((models / "dr.card.json").read_text())
    card["input"]["colour"] = "imagenet-stats"
    (models / "dr.card.json").write_text(json.dumps(card))
    with pytest.raises(ModelIntegrityError, match="unknown input colour normalisation"):
        Screener.load(models, "int8")
