"""The out-of-domain guard: its features, its reference file, and what the pipeline does with it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from appliance.capture.decode import Limits
from appliance.inference import ModelIntegrityError, Screener
from appliance.inference import domain as dom
from appliance.pipeline.image import analyse
from appliance.quality import QualityThresholds
from appliance.synth.case import render_layers
from appliance.synth.dataset import case_for
from appliance.tools.domain_reference import measure
from tests.conftest import fundus, jpeg_bytes

MODELS = Path(__file__).resolve().parents[2] / "models"


def _held_out(n: int) -> list[np.ndarray]:
    """Generated photographs of the held-out test split (never used to build the reference)."""
    from appliance.capture.decode import decode_rgb

    return [
        decode_rgb(render_layers(case_for(3003, i, None, 1152)).jpeg, Limits()) for i in range(n)
    ]


def test_features_are_finite_and_fixed_in_number() -> None:
    values = dom.features(fundus(seed=3, size=(480, 640)))
    assert values.shape == (len(dom.FEATURES),) and np.isfinite(values).all()
    flat = dom.features(np.zeros((100, 100, 3), np.uint8))
    assert np.isfinite(flat).all()


def test_the_shipped_reference_passes_held_out_generated_photographs() -> None:
    """Its threshold is the 99th percentile of the validation split's distances; on the test
    split about 1.4 % of gradable photographs fall outside (measured on 361). Of 40 here, at
    most 3 may (the chance of 4 or more at a 1.4 % rate is under 2 %)."""
    reference = dom.load(MODELS / dom.FILENAME)
    assert reference.quantile == 0.99
    gradable = measure(_held_out(40))
    flagged = sum(reference.distance(v) > reference.threshold for v in gradable)
    assert len(gradable) >= 30 and flagged <= 3


def test_a_photograph_far_from_the_models_data_is_flagged() -> None:
    """A generated photograph pushed into what real cameras do (a strong red that clips) is
    no longer what the models were validated on."""
    reference = dom.load(MODELS / dom.FILENAME)
    rgb = fundus(seed=5, size=(480, 640)).astype(np.float32)
    rgb[..., 0] = rgb[..., 0] * 1.8
    far = np.clip(rgb, 0, 255).astype(np.uint8)
    assert not reference.judge(far)["in_domain"]


def test_a_broken_reference_is_refused_with_its_path(tmp_path: Path) -> None:
    (tmp_path / dom.FILENAME).write_text(json.dumps({"schema": dom.SCHEMA, "features": ["x"]}))
    with pytest.raises(ValueError, match="domain.json: not a usable domain reference"):
        dom.load(tmp_path / dom.FILENAME)


def test_round_trip() -> None:
    rows = [np.random.default_rng(i).normal(size=len(dom.FEATURES)) for i in range(80)]
    ref = dom.fit(rows, "test", 0.9)
    again = dom.DomainReference.from_json(json.loads(json.dumps(ref.to_json())))
    assert again.threshold == pytest.approx(ref.threshold, rel=1e-12)
    assert again.distance(rows[0]) == pytest.approx(ref.distance(rows[0]), rel=1e-9)
    with pytest.raises(ValueError, match="need at least"):
        dom.fit(rows[:10], "test")


def _without_domain(models: Path) -> None:
    card = models / "dr.card.json"
    data = json.loads(card.read_text())
    del data["domain"]
    card.write_text(json.dumps(data))
    (models / dom.FILENAME).unlink()


def test_a_changed_or_missing_reference_is_refused_like_a_model_file(tmp_path: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(MODELS, models, ignore=shutil.ignore_patterns("validation"))
    data = json.loads((models / dom.FILENAME).read_text())
    data["threshold"] = 1e9  # a guard that passes everything
    (models / dom.FILENAME).write_text(json.dumps(data))
    with pytest.raises(ModelIntegrityError, match="domain reference domain.json does not match"):
        Screener.load(models, "int8")
    (models / dom.FILENAME).unlink()
    with pytest.raises(ModelIntegrityError, match="domain reference domain.json is missing"):
        Screener.load(models, "int8")


def test_models_without_a_measured_domain_give_no_automated_result(tmp_path: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(MODELS, models, ignore=shutil.ignore_patterns("validation"))
    _without_domain(models)
    screener = Screener.load(models, "int8")
    analysis = analyse(
        jpeg_bytes(fundus(seed=2, size=(600, 800))),
        Limits(),
        QualityThresholds(),
        screener=screener,
    )
    assert analysis.quality is not None and analysis.quality.gradable
    assert analysis.screening["status"] == "human_grading"
    assert analysis.screening["reasons"] == ["no_domain_reference"]
    assert "findings" not in analysis.screening and analysis.heatmap is None
