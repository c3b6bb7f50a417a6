"""The review desk's OCT pieces without a server: the stored layers round trip, a binned
B-scan's layers drawn back on the frame as received, the sign-off's OCT DME answer checked."""

from __future__ import annotations

import numpy as np
import pytest

from appliance.desks.review_oct import draw_frame
from appliance.desks.review_views import EyeView, VisitDetail, VisitSummary
from appliance.desks.signers import oct_dme_words
from appliance.desks.signoff import Decision, check_oct_dme
from appliance.dicom.oct_pictures import FLUID_RGB, ILM_RGB, RPE_RGB
from appliance.errors import RejectedInput
from appliance.pipeline.oct import OctLayers


def _layers(frames: int = 3, rows: int = 64, ascans: int = 128) -> OctLayers:
    ilm = np.full((frames, ascans), 20.0, np.float32)
    rpe = np.full((frames, ascans), 40.0, np.float32)
    ilm[1, :10] = np.nan  # not found there
    fluid = np.zeros((frames, rows, ascans), bool)
    fluid[1, 25:30, 60:70] = True
    return OctLayers(ilm, rpe, fluid, row_factor=2, ascan_factor=4)


def test_layers_round_trip_small() -> None:
    layers = _layers()
    data = layers.to_bytes()
    back = OctLayers.from_bytes(data)
    assert np.array_equal(back.ilm_px, layers.ilm_px, equal_nan=True)
    assert np.array_equal(back.rpe_px, layers.rpe_px)
    assert np.array_equal(back.fluid, layers.fluid)
    assert (back.row_factor, back.ascan_factor) == (2, 4)
    assert len(data) < 2_000


def test_binned_layers_are_drawn_on_the_frame_as_received() -> None:
    frame = np.full((128, 512), 90, np.uint8)  # binned ×2 rows, ×4 A-scans: 64 x 128
    rgb = draw_frame(frame, _layers(), 1)
    assert rgb.shape == (128, 512, 3)
    ilm_rows = np.flatnonzero((rgb[:, 300] == ILM_RGB).all(axis=1))
    rpe_rows = np.flatnonzero((rgb[:, 300] == RPE_RGB).all(axis=1))
    assert set(ilm_rows) == {39, 40, 41} and set(rpe_rows) == {79, 80, 81}  # rint(row*2 + 0.5)
    assert not (rgb[:, :30] == ILM_RGB).all(axis=2).any()  # NaN: nothing drawn
    plain = draw_frame(frame, None, 1)
    assert (plain == plain[..., :1]).all()  # no layers kept: grey
    tinted = (np.abs(rgb.astype(int) - (np.array(FLUID_RGB) + plain.astype(int)) // 2) <= 1).all(
        axis=2
    ) & (rgb != plain).any(axis=2)
    rows, columns = np.nonzero(tinted)
    assert (rows.min(), rows.max(), columns.min(), columns.max()) == (50, 59, 240, 279)


def _detail(oct_status: str | None, oct_dme: bool | None) -> VisitDetail:
    summary = VisitSummary("study:1", 7, "refer", "Refer.", "soon", True, "2026-12-05",
                           "P1", "Roe^Ann", "", None)  # fmt: skip
    eyes = (
        EyeView("R", "graded", 0, False, False, None, None, (), None, None),
        EyeView("L", "graded", 0, False, False, None, None, (), oct_status, oct_dme),
    )
    return VisitDetail(summary, "1.2.3", "default", (), eyes, (), (), None, ())


def test_the_oct_dme_answer_is_checked() -> None:
    detail = _detail("graded", True)
    override = Decision("override", "refer", "why", oct_dme={"L": False})
    assert check_oct_dme(override, detail, "refer") == {"L": False}
    assert check_oct_dme(override, detail, "rescreen") == {"L": False}  # answered no
    assert check_oct_dme(Decision("override", "refer", "why"), detail, "refer") == {}
    refusals = {
        "choose Override": (Decision("accept", oct_dme={"L": False}), detail, "refer"),
        "Right eye: no gradable OCT": (
            Decision("override", "refer", "w", oct_dme={"R": True}), detail, "refer"),
        "Rescreen contradicts centre-involving macular oedema on OCT in the left eye": (
            Decision("override", "rescreen", "w"), detail, "rescreen"),
        "Left eye: no gradable OCT": (
            Decision("override", "refer", "w", oct_dme={"L": True}),
            _detail("ungradable", None), "refer"),
        "Unknown eye": (Decision("override", "refer", "w", oct_dme={"X": True}), detail, "refer"),
    }  # fmt: skip
    for message, (choice, shown, outcome) in refusals.items():
        with pytest.raises(RejectedInput, match=message):
            check_oct_dme(choice, shown, outcome)
    answered = _detail("human_grading", None)  # no automated answer: the clinician gives one
    assert check_oct_dme(Decision("override", "refer", "w", oct_dme={"L": True}), answered,
                         "refer") == {"L": True}  # fmt: skip
    assert oct_dme_words("R", False) == (
        "Right eye: centre-involving macular oedema on OCT: no (clinician)"
    )
