"""OCT volume quality: can this macular volume be measured, and if not, why? Pure numpy/OpenCV.

:func:`assess_oct` measures, on each B-scan smoothed along the A-scans:

* ``signal_db``: 10 log10 of bright tissue (99.5th percentile) over the background (10th
  percentile), median over the non-blank B-scans — a Q-index-like signal strength;
* ``blank_fraction``: share of B-scans whose contrast is under 30 % of the median (blinks);
* ``clipped_fraction``: share of A-scans with tissue in the first row of the frame;
* ``decentration_mm``: fovea to scan centre, from ``fovea_mm`` when the measurement gives it,
  else from a cheap own estimate (darkest inner-retina band below the first bright row);
* ``motion_um``: largest axial jump between neighbouring B-scans beyond the typical step, from
  the normalised cross-correlation of their mean axial profiles.

Each is compared with its threshold through a sub-score that is exactly 0.5 at the threshold
(:func:`appliance.quality.gate.subscore`); a reason is reported below 0.5 and the score is the
smallest sub-score, so ``gradable`` is True exactly when there are no reasons.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, fields

import cv2
import numpy as np

from appliance.domain import QualityReport
from appliance.quality.gate import subscore

LOGGER = logging.getLogger(__name__)

BLANK_CONTRAST = 0.3

OCT_REASON_ORDER: tuple[str, ...] = (
    "oct_blink",
    "oct_low_signal",
    "oct_clipped",
    "oct_decentred",
    "oct_motion",
)

OCT_GUIDANCE: dict[str, str] = {
    "oct_blink": (
        "Blink: some scans are dark because the eye closed — ask the patient to blink first"
        " and then keep the eye open during the scan, then rescan."
    ),
    "oct_low_signal": (
        "Weak signal: the scan is faint — clean the lens, ask the patient to blink, centre"
        " the beam on the pupil and refocus, then rescan."
    ),
    "oct_clipped": (
        "Cut off at the top: the retina runs out of the picture — move the scan window"
        " (reference arm) down until the whole retina is inside, then rescan."
    ),
    "oct_decentred": (
        "Off centre: the scan is not centred on the fovea — ask the patient to look straight"
        " at the fixation target and centre the scan on the fovea, then rescan."
    ),
    "oct_motion": (
        "Eye movement: the scans jump between lines — ask the patient to keep still and"
        " look at the target, switch on eye tracking if available, then rescan."
    ),
}

METRIC_KEYS: tuple[str, ...] = (
    "signal_db",
    "blank_fraction",
    "clipped_fraction",
    "decentration_mm",
    "motion_um",
)


@dataclass(frozen=True)
class OctQualityThresholds:
    """Pass marks for :func:`assess_oct`; measurements exactly at a threshold pass."""

    min_signal_db: float = 15.3
    max_blank_fraction: float = 0.05
    max_clipped_fraction: float = 0.22
    max_decentration_mm: float = 0.64
    max_motion_um: float = 33.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{f.name} must be a finite number >= 0, got {value!r}")


def _smooth(volume: np.ndarray) -> np.ndarray:
    out = np.empty(volume.shape, dtype=np.float32)
    for f in range(volume.shape[0]):
        out[f] = cv2.GaussianBlur(volume[f].astype(np.float32), (0, 0), sigmaX=2.5, sigmaY=1.0)
    return out


def _own_fovea(
    smooth: np.ndarray, keep: np.ndarray, bright: float, bg: float, spacing_mm: tuple[float, ...]
) -> tuple[float, float]:
    """A cheap fovea estimate: where the band 15-60 µm below the first bright row (the ILM) is
    darkest — the inner retinal layers are missing only at the fovea."""
    frame_mm, axial_mm, lateral_mm = spacing_mm
    if not keep.any():
        return 0.0, 0.0
    um = axial_mm * 1000.0
    frames = smooth[keep]  # (F', R, A)
    first = np.argmax(frames > bg + 0.3 * (bright - bg), axis=1)  # (F', A)
    csum = np.concatenate([np.zeros_like(frames[:, :1]), np.cumsum(frames, axis=1)], axis=1)
    rows = frames.shape[1]
    top = np.clip(first + int(round(15.0 / um)), 0, rows)
    bottom = np.clip(first + max(int(round(60.0 / um)), 1), 0, rows)
    fi, ai = np.meshgrid(np.arange(frames.shape[0]), np.arange(frames.shape[2]), indexing="ij")
    band = (csum[fi, bottom, ai] - csum[fi, top, ai]) / np.maximum(bottom - top, 1)
    positions = np.flatnonzero(keep) * frame_mm
    height = float(positions[-1] - positions[0]) if positions.size > 1 else 0.0
    n = max(2, int(round(height / lateral_mm)) + 1)
    yq = np.linspace(positions[0], positions[-1], n)
    iso = np.stack([np.interp(yq, positions, band[:, a]) for a in range(band.shape[1])], axis=1)
    step = lateral_mm
    img = cv2.GaussianBlur(iso.astype(np.float32), (0, 0), 0.15 / step)
    centre_y = (smooth.shape[0] - 1) * frame_mm / 2.0
    ys = (yq - centre_y)[:, None]
    xs = (np.arange(img.shape[1]) - (img.shape[1] - 1) / 2.0)[None, :] * step
    img = np.where(np.hypot(xs, ys) <= 2.0, img, np.inf)
    iy, ix = np.unravel_index(int(np.argmin(img)), img.shape)
    return float(xs[0, ix]), float(ys[iy, 0])


def _zscore(values: np.ndarray) -> np.ndarray:
    return (values - values.mean()) / (float(values.std()) + 1e-6)


def _motion_um(smooth: np.ndarray, keep: np.ndarray, cut: np.ndarray, axial_mm: float) -> float:
    """Largest axial jump between neighbouring B-scans beyond the volume's typical step (µm).

    The mean axial profiles of two neighbouring B-scans (over the A-scans cut off at the top in
    neither) are compared by normalised cross-correlation over a window that slides by up to
    150 µm; the shift of the best match (parabola-refined) is the step. Normalised, because a
    plain dot product grows wherever a shift brings more bright tissue into the window — a
    retina touching the top of the frame then reads as a jump.
    """
    frames = np.flatnonzero(keep)
    if frames.size < 3:
        return 0.0
    rows = smooth.shape[1]
    reach = min(rows // 4, max(4, int(round(150.0 / (axial_mm * 1000.0)))))
    steps = []
    for f, g in zip(frames[:-1], frames[1:], strict=True):
        cols = ~(cut[f] | cut[g])
        if cols.sum() < 8:
            continue
        a = _zscore(smooth[f][reach : rows - reach, cols].mean(axis=1))
        b = smooth[g][:, cols].mean(axis=1)
        corr = np.array(
            [
                float(np.dot(a, _zscore(b[reach + d : rows - reach + d])))
                for d in range(-reach, reach + 1)
            ]
        )
        i = int(np.argmax(corr))
        delta = 0.0
        if 0 < i < len(corr) - 1:
            denom = corr[i - 1] - 2.0 * corr[i] + corr[i + 1]
            delta = 0.5 * (corr[i - 1] - corr[i + 1]) / denom if denom != 0 else 0.0
        steps.append(i - reach + delta)
    if len(steps) < 2:
        return 0.0
    step = np.asarray(steps)
    return float(np.max(np.abs(step - np.median(step))) * axial_mm * 1000.0)


def oct_metrics(
    volume: np.ndarray,
    spacing_mm: tuple[float, float, float],
    fovea_mm: tuple[float, float] | None = None,
) -> dict[str, float]:
    """The measurements under :data:`METRIC_KEYS` for one (frames, rows, A-scans) volume."""
    if volume.ndim != 3 or min(volume.shape) == 0:
        raise ValueError(f"expected a non-empty (frames, rows, A-scans) volume, got {volume.shape}")
    _, axial_mm, _ = spacing_mm
    smooth = _smooth(volume)
    lo = np.percentile(smooth.reshape(smooth.shape[0], -1), 10.0, axis=1)
    hi = np.percentile(smooth.reshape(smooth.shape[0], -1), 99.5, axis=1)
    contrast = hi - lo
    keep = contrast >= BLANK_CONTRAST * float(np.median(contrast))
    bg = float(np.median(lo[keep]))
    bright = float(np.median(hi[keep]))
    signal_db = 20.0 * math.log10(max(bright - bg, 1e-3) / max(bg, 1e-3))
    cut = smooth[:, 0, :] > bg + 0.25 * (bright - bg)  # tissue in the first row: cut off above
    clipped = float(np.mean(cut[keep])) if keep.any() else 0.0
    if fovea_mm is None:
        fovea_mm = _own_fovea(smooth, keep, bright, bg, spacing_mm)
    motion = _motion_um(smooth, keep, cut, axial_mm)
    return {
        "signal_db": signal_db,
        "blank_fraction": float(1.0 - keep.mean()),
        "clipped_fraction": clipped,
        "decentration_mm": float(math.hypot(*fovea_mm)),
        "motion_um": motion,
    }


def assess_oct(
    volume: np.ndarray,
    spacing_mm: tuple[float, float, float],
    fovea_mm: tuple[float, float] | None = None,
    thresholds: OctQualityThresholds = OctQualityThresholds(),
) -> QualityReport:
    """Grade the quality of one macular OCT volume (frames, rows, A-scans).

    ``spacing_mm`` is (between B-scans, axial, lateral); ``fovea_mm`` the measured fovea (x, y)
    from the scan centre, when known. Returns reasons in :data:`OCT_REASON_ORDER` with one
    retake sentence each, a score in [0, 1] and the measurements under :data:`METRIC_KEYS`.
    """
    metrics = oct_metrics(volume, spacing_mm, fovea_mm)
    t = thresholds
    subs = {
        "oct_blink": subscore(t.max_blank_fraction + 1e-3, metrics["blank_fraction"] + 1e-3),
        "oct_low_signal": subscore(metrics["signal_db"], t.min_signal_db),
        "oct_clipped": subscore(t.max_clipped_fraction + 1e-3, metrics["clipped_fraction"] + 1e-3),
        "oct_decentred": subscore(t.max_decentration_mm, metrics["decentration_mm"]),
        "oct_motion": subscore(t.max_motion_um, metrics["motion_um"]),
    }
    score = float(min(subs.values()))
    reasons = tuple(code for code in OCT_REASON_ORDER if subs[code] < 0.5)
    LOGGER.debug("OCT quality score %.3f reasons %s", score, ",".join(reasons) or "-")
    return QualityReport(
        gradable=not reasons,
        score=score,
        reasons=reasons,
        guidance=tuple(OCT_GUIDANCE[code] for code in reasons),
        metrics={key: float(metrics[key]) for key in METRIC_KEYS},
    )
