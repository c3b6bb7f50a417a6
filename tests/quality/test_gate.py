"""The quality gate, calibrated on synthetic photographs degraded on purpose."""

from __future__ import annotations

import dataclasses
import functools
import json
import math

import cv2
import numpy as np
import pytest

from appliance.domain import QualityReport
from appliance.quality import GUIDANCE, METRIC_KEYS, REASON_ORDER, QualityThresholds, assess
from appliance.synth import DEGRADATIONS, fundus_layout, make_fundus, not_fundus, underexpose

SQUARE = (1024, 1024)
WIDE = (1536, 2048)  # the field fills the height but not the width
# (seed, size, eye, pigmentation): both eyes, two pigmentation levels, two resolutions.
CASES = [
    (0, SQUARE, "R", 0.2),
    (1, SQUARE, "L", 0.8),
    (2, SQUARE, "R", 0.8),
    (3, SQUARE, "L", 0.2),
    (4, WIDE, "R", 0.2),
    (5, WIDE, "L", 0.8),
    (6, WIDE, "R", 0.8),
    (7, WIDE, "L", 0.2),
]
CASE_IDS = [f"seed{c[0]}-{c[1][1]}x{c[1][0]}-{c[2]}-p{c[3]}" for c in CASES]
STABLE_KEYS = {
    "fundus_likeness",
    "field_found",
    "field_circularity",
    "field_iou",
    "surround_ratio",
    "field_size",
    "center_offset",
    "field_coverage",
    "central_coverage",
    "brightness",
    "saturated_fraction",
    "saturated_red",
    "saturated_green",
    "saturated_blue",
    "focus",
    "contrast",
    "unevenness",
    "darkest_sector",
    "red_green_ratio",
}


@functools.cache
def _clean(index: int) -> np.ndarray:
    seed, size, eye, pigmentation = CASES[index]
    return make_fundus(seed, size, eye, pigmentation)


@functools.cache
def _clean_report(index: int) -> QualityReport:
    return _checked(assess(_clean(index)))


def _jpeg(rgb: np.ndarray, quality: int = 85) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1])


def _checked(report: QualityReport) -> QualityReport:
    """Invariants every report keeps, whatever the picture."""
    assert 0.0 <= report.score <= 1.0
    assert report.gradable is (not report.reasons)
    assert report.gradable is (report.score >= 0.5)
    assert report.guidance == tuple(GUIDANCE[code] for code in report.reasons)
    order = [REASON_ORDER.index(code) for code in report.reasons]
    assert order == sorted(set(order))
    if "not_fundus" in report.reasons:
        assert report.reasons == ("not_fundus",)
        assert report.field_geometry is None
    assert tuple(report.metrics) == METRIC_KEYS
    assert set(METRIC_KEYS) == STABLE_KEYS
    assert all(type(v) is float and math.isfinite(v) for v in report.metrics.values())
    json.dumps(report.metrics)
    return report


@pytest.mark.parametrize("index", range(len(CASES)), ids=CASE_IDS)
def test_clean_image_is_gradable(index: int) -> None:
    report = _clean_report(index)
    assert report.reasons == ()
    assert report.gradable
    assert report.score >= 0.5


@pytest.mark.parametrize("index", range(len(CASES)), ids=CASE_IDS)
def test_field_geometry_matches_the_generated_field(index: int) -> None:
    lay = fundus_layout(*CASES[index])
    geometry = _clean_report(index).field_geometry
    assert geometry is not None
    assert abs(geometry.cx - lay.field_cx) < 0.02 * lay.field_radius
    assert abs(geometry.cy - lay.field_cy) < 0.02 * lay.field_radius
    assert abs(geometry.radius - lay.field_radius) < 0.02 * lay.field_radius


@pytest.mark.parametrize("index", range(len(CASES)), ids=CASE_IDS)
def test_jpeg_compressed_clean_image_stays_gradable(index: int) -> None:
    report = _checked(assess(_jpeg(_clean(index))))
    assert report.reasons == ()


@pytest.mark.parametrize("code", sorted(DEGRADATIONS))
@pytest.mark.parametrize("index", range(len(CASES)), ids=CASE_IDS)
def test_clear_defect_raises_its_own_reason(code: str, index: int) -> None:
    degraded = DEGRADATIONS[code](_clean(index))  # default strength: plainly visible
    report = _checked(assess(degraded))
    assert report.reasons == (code,)
    assert report.guidance == (GUIDANCE[code],)
    assert not report.gradable
    assert report.score < _clean_report(index).score


# For each defect: the metric that measures it, and +1 if it grows with strength, -1 if it falls.
RESPONSE = {
    "out_of_focus": [("focus", -1)],
    "too_dark": [("brightness", -1)],
    "too_bright": [("brightness", 1), ("saturated_fraction", 1)],
    "low_contrast": [("contrast", -1)],
    "uneven_illumination": [("unevenness", 1), ("darkest_sector", -1)],
    "off_center": [("center_offset", 1), ("field_coverage", -1)],
}


@pytest.mark.parametrize("code", sorted(DEGRADATIONS))
@pytest.mark.parametrize("index", [1, 4], ids=[CASE_IDS[1], CASE_IDS[4]])
def test_stronger_defect_moves_its_metric_monotonically(code: str, index: int) -> None:
    strengths = [0.0, 0.25, 0.5, 0.75, 1.0]
    reports = [_checked(assess(DEGRADATIONS[code](_clean(index), s))) for s in strengths]
    for key, direction in RESPONSE[code]:
        values = [r.metrics[key] for r in reports]
        steps = np.diff(values) * direction
        if key == "saturated_fraction":  # climbs to 1 and stays there
            assert (steps >= 0).all() and values[-1] > values[0], values
        else:
            assert (steps > 0).all(), (key, values)
    scores = [r.score for r in reports]
    assert scores[-1] < 0.5 <= _clean_report(index).score


@pytest.mark.parametrize("seed", range(8))
def test_not_fundus_pictures_give_only_not_fundus(seed: int) -> None:
    report = _checked(assess(not_fundus(seed, (600, 800))))
    assert report.reasons == ("not_fundus",)
    assert report.guidance == (GUIDANCE["not_fundus"],)
    assert report.score < 0.5
    assert report.metrics["fundus_likeness"] < 0.5


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((200, 300, 3), np.uint8),
        np.full((200, 300, 3), 255, np.uint8),
        np.zeros((1, 1, 3), np.uint8),
        np.full((1, 1), 128, np.uint8),
        np.zeros((3, 2), np.uint8),
        np.full((7, 5, 3), 90, np.uint8),
        np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8),
        np.random.default_rng(1).integers(0, 256, (2, 2), dtype=np.uint8),
    ],
    ids=["black", "white", "1x1", "1x1-grey", "3x2-grey", "7x5-flat", "noise", "2x2-noise"],
)
def test_degenerate_pictures_are_answered_not_fundus(image: np.ndarray) -> None:
    report = _checked(assess(image))
    assert report.reasons == ("not_fundus",)


@pytest.mark.parametrize("size", [(16, 16), (48, 64), (128, 128)])
def test_tiny_fundus_pictures_never_raise(size: tuple[int, int]) -> None:
    report = _checked(assess(make_fundus(0, size)))
    assert not report.gradable  # too little detail to grade


def test_black_frame_with_faint_field_is_too_dark() -> None:
    report = _checked(assess(underexpose(_clean(0), 1.0)))
    assert report.reasons == ("too_dark",)
    assert report.field_geometry is not None


def test_greyscale_fundus_is_accepted_in_every_layout() -> None:
    grey = cv2.cvtColor(make_fundus(9, (768, 768)), cv2.COLOR_RGB2GRAY)
    flat = _checked(assess(grey))
    assert flat.reasons == ()
    for variant in (grey[..., None], np.repeat(grey[..., None], 3, axis=2)):
        report = _checked(assess(variant))
        assert report.metrics == flat.metrics
        assert report.field_geometry == flat.field_geometry


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((10, 10, 3), np.float32), "expected dtype uint8, got float32"),
        (np.zeros((10, 10, 3), np.uint16), "expected dtype uint8, got uint16"),
        (np.zeros((10, 10, 4), np.uint8), r"expected an HxWx3 RGB or HxW greyscale"),
        (np.zeros((10,), np.uint8), r"got shape \(10,\)"),
        (np.zeros((2, 10, 10, 3), np.uint8), r"got shape \(2, 10, 10, 3\)"),
        (np.zeros((0, 10, 3), np.uint8), "expected a non-empty image"),
        ([[0, 1], [2, 3]], "expected a numpy array, got list"),
    ],
)
def test_wrong_dtype_or_shape_is_rejected(image: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        assess(image)  # type: ignore[arg-type]
    assert _checked(assess(np.zeros((4, 4), np.uint8))).reasons == ("not_fundus",)


def test_measurement_exactly_at_threshold_passes_with_score_one_half() -> None:
    report = _clean_report(0)
    focus = report.metrics["focus"]
    at_mark = _checked(assess(_clean(0), QualityThresholds(min_focus=focus)))
    assert at_mark.reasons == ()
    assert at_mark.score == 0.5
    above = _checked(assess(_clean(0), QualityThresholds(min_focus=focus * 1.01)))
    assert above.reasons == ("out_of_focus",)
    assert above.score < 0.5


def test_thresholds_are_checked() -> None:
    names = [f.name for f in dataclasses.fields(QualityThresholds)]
    assert names == [
        "min_focus",
        "min_brightness",
        "max_brightness",
        "max_saturated_fraction",
        "min_contrast",
        "max_unevenness",
        "min_sector_brightness",
        "max_center_offset",
        "min_field_coverage",
        "min_fundus_likeness",
    ]
    assert all(isinstance(getattr(QualityThresholds(), n), float) for n in names)
    with pytest.raises(ValueError, match="min_focus must be a finite number >= 0"):
        QualityThresholds(min_focus=-1.0)
    with pytest.raises(ValueError, match="max_brightness must be a finite number >= 0"):
        QualityThresholds(max_brightness=math.nan)
    with pytest.raises(ValueError, match="min_field_coverage is a fraction"):
        QualityThresholds(min_field_coverage=1.5)


def test_guidance_is_one_plain_sentence_per_reason() -> None:
    assert set(GUIDANCE) == set(REASON_ORDER)
    assert len(REASON_ORDER) == 7
    for code, text in GUIDANCE.items():
        assert text[0].isupper() and text.endswith("."), code
        assert text.count(". ") == 0, code
        assert "_" not in text, code


def test_same_eye_at_two_resolutions_measures_alike() -> None:
    small = _checked(assess(make_fundus(8, (768, 1024), "R", 0.5)))
    large = _checked(assess(make_fundus(8, (1536, 2048), "R", 0.5)))
    for key in ("focus", "contrast", "brightness"):
        assert large.metrics[key] == pytest.approx(small.metrics[key], rel=0.1), key
    assert large.metrics["unevenness"] == pytest.approx(small.metrics["unevenness"], abs=0.03)
