"""``appliance screen`` measures an OCT volume next to the photographs, nothing stored."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from appliance.cli import main
from tests.conftest import op_bytes
from tests.pipeline.test_heatmap_sc import _photo
from tests.pipeline.test_oct_pipeline import opt_bytes


def test_screen_an_oct_with_a_photograph(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    volume = tmp_path / "oct.dcm"
    volume.write_bytes(opt_bytes("R", thickening_um=120.0))
    photo = tmp_path / "photo.dcm"
    photo.write_bytes(op_bytes(_photo("R"), laterality="R"))
    main(["screen", "--json", str(volume), str(photo)])
    out = json.loads(capsys.readouterr().out)
    scan = out["images"][0]
    assert scan["path"] == str(volume) and scan["status"] == "measured"
    assert scan["oct"]["finding"]["cst_um"] > 330 and scan["oct"]["thickness_map"] is None
    outcome = out["visit"]["outcome"]
    assert outcome["code"] == "refer" and "Centre-involving" in outcome["text"]
    right = next(e for e in outcome["eyes"] if e["eye"] == "R")
    assert right["oct_dme"] is True and right["status"] == "graded"


def test_screen_measures_oct_fluid_with_the_installed_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from appliance.inference.oct.fluid_net import FluidNet
    from appliance.inference.oct.measure import CLASSICAL_FLUID
    from tests.pipeline.test_oct_fluid_wiring import _install

    volume = tmp_path / "oct.dcm"
    volume.write_bytes(opt_bytes("R", thickening_um=120.0))
    methods = {}
    for name, install in (("with-model", True), ("without", False)):
        models = tmp_path / name
        models.mkdir()
        if install:
            _install(models)
        monkeypatch.setenv("APPLIANCE_MODELS_DIR", str(models))
        main(["screen", "--json", str(volume)])
        methods[name] = json.loads(capsys.readouterr().out)["images"][0]["oct"]["fluid_method"]
    net = FluidNet.find(tmp_path / "with-model")
    assert net is not None and methods == {"with-model": net.method, "without": CLASSICAL_FLUID}
