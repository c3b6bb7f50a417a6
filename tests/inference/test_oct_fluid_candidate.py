"""The OCT fluid model the recipe last built (task ``oct-fluid``, models/candidates/; copied
into models/ only when its install rule held, see docs/synth/oct.md): its card and files, that
what is installed is what the card's decision says, and that it loads and runs through the
card like an installed model, measured as the appliance measures a volume."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.inference.card import DISCLAIMER, find_cards
from appliance.inference.oct.fluid_net import TASK, FluidNet
from appliance.inference.oct.measure import measure_oct
from appliance.synth.oct.dataset import oct_case_for
from appliance.synth.oct.render import render_oct

MODELS = Path(__file__).resolve().parents[2] / "models" / "candidates"
INSTALLED = MODELS.parent


@pytest.fixture(scope="module")
def net() -> FluidNet:
    found = FluidNet.find(MODELS, "int8")
    assert found is not None
    return found


def test_the_card_says_what_it_is_and_matches_its_files() -> None:
    card = next(c for c in find_cards(MODELS) if c.task == TASK)
    assert card.data["disclaimer"] == DISCLAIMER
    assert card.data["status"] == "demonstration, not clinically validated"
    for variant in card.variants():
        card.verify(variant)
        assert card.data["files"][variant]["bytes"] < 5 * 1024 * 1024
    agreement = card.data["int8_fp32_agreement"]
    assert agreement["int8_allowed"] == (agreement["decision_agreement"] >= 0.99)
    assert ("int8" in card.variants()) == agreement["int8_allowed"]  # INT8 only at >= 99 %
    assert 0 < card.thresholds["pixel"] < 1 and card.data["validation"]["seeds"]
    assert card.data["calibration"]["temperature"] > 0


def test_what_is_installed_is_what_the_decision_says() -> None:
    card = next(c for c in find_cards(MODELS) if c.task == TASK)
    installed = FluidNet.find(INSTALLED)
    if card.data["installed"]:
        assert installed is not None and installed.card.data == card.data
        for variant in card.variants():
            assert installed.card.verify(variant).read_bytes() == card.verify(variant).read_bytes()
    else:
        assert installed is None
        assert all(c.task != TASK for c in find_cards(INSTALLED))


@pytest.mark.parametrize(("seed", "index"), [(1602, 3), (1602, 5), (1602, 1)])
def test_central_fluid_is_found_and_a_dry_centre_is_not(
    net: FluidNet, seed: int, index: int
) -> None:
    case = oct_case_for(seed, index, "compact")
    r = render_oct(case)
    m = measure_oct(r.volume, case.geometry.spacing_mm, case.eye, net)
    assert m.fluid_method.startswith("model oct-fluid-demo ")
    assert (m.fluid.p_centre >= 0.5) == case.centre_fluid
    assert m.fluid.mask.shape == r.volume.shape
