"""The worker measures OCT fluid with an installed ``oct-fluid`` model (loaded once, like the
fundus screener) and with the classical detector otherwise; a model that fails its checks is
refused loudly (log, audit, admin page) and the classical detector measures. The model is the
candidate in models/candidates/, copied into a models folder of the test's own."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest

from appliance import __version__
from appliance.capture import Incoming
from appliance.config import Settings
from appliance.domain import Source
from appliance.inference.card import find_cards
from appliance.inference.oct.fluid_net import TASK, FluidNet
from appliance.inference.oct.measure import CLASSICAL_FLUID
from appliance.pipeline.oct import ALGORITHM, analyse_oct
from appliance.pipeline.oct import layers as oct_layers
from appliance.pipeline.oct_documents import sr_algorithm
from appliance.runtime.services import Services
from appliance.synth.oct import GEOMETRIES, OctCase, render_oct
from appliance.synth.oct.dicom import encode_opt, opt_dataset
from appliance.visits import ImageRecord, OctRecord
from tests.admin_helpers import text
from tests.conftest import wait_for
from tests.web_helpers import logged_in
from web import create_app

CANDIDATES = Path(__file__).resolve().parents[2] / "models" / "candidates"


def _install(folder: Path) -> Path:
    """The candidate's card and the files it names, copied into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    card = next(c for c in find_cards(CANDIDATES) if c.task == TASK)
    for entry in card.data["files"].values():
        shutil.copy2(CANDIDATES / entry["path"], folder / entry["path"])
    shutil.copy2(card.path, folder / card.path.name)
    return folder / card.path.name


def _wet_opt() -> bytes:
    case = OctCase(
        seed=5, geometry=GEOMETRIES["small"], eye="R", thickening_um=60.0, cysts=4,
        srf_um=80.0, fluid_in_centre=True, drusen=0, defect=None, defect_strength=0.0,
    )  # fmt: skip
    r = render_oct(case)
    return encode_opt(opt_dataset(r.volume, r.spacing_mm, "R", None), "jpegls")


@pytest.fixture(scope="module")
def wet_opt() -> bytes:
    return _wet_opt()


def _measure(services: Services, data: bytes) -> tuple[int, ImageRecord]:
    incoming = Incoming(data=data, source=Source.DICOM, user_id="ae:OCT", calling_ae="OCT")
    capture_id = int(services.ingestor.ingest(incoming).id)
    row = wait_for(
        lambda: services.store.one(
            "SELECT payload FROM results WHERE capture_pk = ? AND kind = 'screening'",
            (capture_id,),
        ),
        timeout=90,
    )
    return capture_id, ImageRecord.parse(row["payload"])


def _analysis_event(services: Services, capture_id: int) -> dict[str, Any]:
    rows = services.store.query("SELECT detail FROM audit_events ORDER BY seq")
    details = [json.loads(row["detail"]) for row in rows]
    found = [d for d in details if d.get("stage") == "oct_analysis"]
    assert len(found) == 1 and found[0]["capture_id"] == capture_id
    return dict(found[0])


def _seg_algorithms(services: Services, capture_id: int) -> dict[str, tuple[str, str]]:
    """Each segment of the volume's Segmentation: (algorithm name, family code value)."""
    row = wait_for(
        lambda: services.store.one(
            "SELECT file_path FROM derived_objects WHERE capture_pk = ? AND kind = 'seg'",
            (capture_id,),
        ),
        timeout=60,
    )
    seg = pydicom.dcmread(services.blobs.resolve(row["file_path"]))
    return {
        str(item.SegmentLabel): (
            str(item.SegmentAlgorithmName),
            str(item.SegmentationAlgorithmIdentificationSequence[0]
                .AlgorithmFamilyCodeSequence[0].CodeValue),
        )
        for item in seg.SegmentSequence
    }  # fmt: skip


def _admin_page(services: Services) -> str:
    app = create_app(services.settings, services)
    return text(logged_in(app, services, "admin").get("/admin/models"))


def test_an_installed_model_measures_the_fluid(
    settings: Settings, tmp_path: Path, wet_opt: bytes
) -> None:
    models = tmp_path / "models"
    _install(models)
    services = Services(settings.replace(models_dir=str(models)))
    services.start(dicom=False, hotfolder=False)
    try:
        net = services.oct_fluid
        assert isinstance(net, FluidNet) and services.oct_fluid_status == net.method
        assert services.model_status == "none installed"  # the fundus screener skips it
        capture_id, record = _measure(services, wet_opt)
        scan = record.oct
        assert scan is not None and record.data["status"] == "measured"
        assert record.data["oct"]["fluid_method"] == net.method
        assert net.method.startswith("model oct-fluid-demo ") and "sha256 " in net.method
        assert f"fluid by {net.method}" in record.data["message"]
        # the stored fluid is the model's: measured again, directly, with the same model
        direct = analyse_oct(wet_opt, services.limits, None, net)
        assert direct.finding is not None and direct.layers is not None
        stored = oct_layers(services.blobs, scan)
        assert stored is not None and np.array_equal(stored.fluid, direct.layers.fluid)
        assert scan.finding is not None
        assert scan.finding["p_fluid_centre"] == direct.finding.p_fluid_centre
        classical = analyse_oct(wet_opt, services.limits, None)
        assert classical.fluid_method == CLASSICAL_FLUID
        assert _analysis_event(services, capture_id)["fluid_method"] == net.method
        # the Segmentation's fluid segment names the model (AI family), its retina the baseline
        segments = _seg_algorithms(services, capture_id)
        assert segments["fluid"] == (net.method[:64], "123110")
        assert segments["retina (ILM to RPE)"][1] == "123103"
        said = _admin_page(services)
    finally:
        services.stop()
    assert f"OCT fluid measured by {net.method}" in said
    assert "✔ yes variant " + net.session.variant in said  # its card is listed as in use


def test_without_a_model_the_classical_detector_measures(
    services: Services, wet_opt: bytes
) -> None:
    assert services.oct_fluid is None
    capture_id, record = _measure(services, wet_opt)
    assert record.data["oct"]["fluid_method"] == CLASSICAL_FLUID
    assert _analysis_event(services, capture_id)["fluid_method"] == CLASSICAL_FLUID
    assert _seg_algorithms(services, capture_id)["fluid"][1] == "123104"  # morphological
    said = _admin_page(services)
    assert f"OCT fluid measured by {CLASSICAL_FLUID} (no oct-fluid model installed)" in said


def _tamper_file(card_path: Path) -> str:
    card = json.loads(card_path.read_text())
    for entry in card["files"].values():  # whichever variant it would load
        target = card_path.parent / entry["path"]
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 0x01
        target.write_bytes(bytes(data))
    return "does not match its card"


def _break_schema(card_path: Path) -> str:
    card = json.loads(card_path.read_text())
    card["outputs"] = {"logits": card["outputs"]["fluid_logit"]}  # not what the code reads
    card_path.write_text(json.dumps(card))
    return "no output 'fluid_logit'"


@pytest.mark.parametrize("damage", [_tamper_file, _break_schema])
def test_a_model_that_fails_its_checks_is_refused_and_the_classical_detector_measures(
    settings: Settings, tmp_path: Path, wet_opt: bytes, damage: Any
) -> None:
    expected = damage(_install(tmp_path / "models"))
    services = Services(settings.replace(models_dir=str(tmp_path / "models")))
    services.start(dicom=False, hotfolder=False)
    try:
        assert services.oct_fluid is None
        assert services.oct_fluid_status.startswith(f"{CLASSICAL_FLUID}: the oct-fluid model ")
        assert expected in services.oct_fluid_status
        alerts = [
            json.loads(r["detail"])
            for r in services.store.query("SELECT detail FROM audit_events ORDER BY seq")
        ]
        assert any(
            a.get("alert") == "model_integrity" and expected in a.get("message", "") for a in alerts
        )
        _, record = _measure(services, wet_opt)
        assert record.data["status"] == "measured"
        assert record.data["oct"]["fluid_method"] == CLASSICAL_FLUID
        said = _admin_page(services)
    finally:
        services.stop()
    assert "✖ model refused" in said and expected in said


def test_the_sr_group_names_who_found_the_fluid() -> None:
    """The SR's OCT group names the baseline, or, when a model found the fluid, the model in
    the version (the record's ``fluid_method``: card name, version, variant, file hash)."""
    method = "model oct-fluid-demo 0.3.0 (int8, sha256 0123456789ab)"
    name, version = sr_algorithm(OctRecord({"fluid_method": method}))
    assert version == method and "model" in name and len(name) <= 64
    assert sr_algorithm(OctRecord({"fluid_method": CLASSICAL_FLUID})) == (ALGORITHM, __version__)
    assert sr_algorithm(OctRecord({})) == (ALGORITHM, __version__)  # records before the model
