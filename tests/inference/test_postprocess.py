from __future__ import annotations

import numpy as np
import pytest

from appliance.inference.postprocess import dr, glaucoma, gradability, heatmap, softmax


def test_softmax_is_stable_and_normalised() -> None:
    p = softmax(np.array([1000.0, 1000.0, -1000.0]))
    assert p == pytest.approx([0.5, 0.5, 0.0])


def test_gradability_uses_the_reject_probability() -> None:
    out = gradability({"quality_logits": np.log(np.array([[0.2, 0.2, 0.6]]))}, {"gradable": 0.5})
    assert out["quality"] == "reject" and out["p_gradable"] == pytest.approx(0.4)
    assert out["gradable"] is False


def test_dr_thresholds_decide_referral() -> None:
    outputs = {
        "grade_logits": np.array([[0, 0, 5, 0, 0]], np.float32),
        "referable_logit": np.array([[0.0]], np.float32),  # p = 0.5
        "dme_logit": np.array([[-5.0]], np.float32),
    }
    low = dr(outputs, {"referable": 0.4, "dme": 0.5})
    high = dr(outputs, {"referable": 0.6, "dme": 0.5})
    assert low["dr_grade"] == 2 and low["p_referable"] == pytest.approx(0.5)
    assert low["referable"] is True and high["referable"] is False and low["dme"] is False


def test_glaucoma_clips_the_ratio() -> None:
    out = glaucoma({"cdr": np.array([[1.3]]), "suspect_logit": np.array([[2.0]])}, {"suspect": 0.5})
    assert out["cdr"] == 1.0 and out["glaucoma_suspect"] is True


def test_heatmap_is_scaled_and_rectified() -> None:
    cam = np.array([[[[-1.0, 0.0], [2.0, 4.0]]]], np.float32)
    assert heatmap({"cam": cam}).tolist() == [[0.0, 0.0], [0.5, 1.0]]
    assert heatmap({}) is None
