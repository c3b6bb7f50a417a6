"""ILM and outer RPE boundary per B-scan: a classical baseline, pure numpy/OpenCV.

Each B-scan is smoothed along the A-scans, normalised between its background (10th percentile)
and its brightest tissue (99.5th percentile), and scored at every row boundary with box
(matched) filters along depth:

* outer RPE boundary: bright above minus dark below, plus the brightness above and a small
  bonus per mm of depth, so the bright RPE band wins over the ellipsoid zone and the RNFL;
* ILM: bright below minus twice the mean over a longer window above, so only an edge with
  vitreous above it scores well.

Each A-scan's signal is first divided by its share of the lateral trend (vessel shadows). A
dynamic-programming path through each score (at most :data:`MAX_JUMP_PX` rows between
neighbouring A-scans, a penalty per row jumped) gives one boundary per A-scan, refined to
sub-row precision by a parabola through a narrow symmetric step filter. The RPE is found
first; the ILM is searched between 1 mm and 80 µm above it. A second pass searches each B-scan
again within a band around what its neighbours found. Boundaries use the generator's row
convention: row ``i`` lies below a boundary ``b`` when ``i >= b``. Blank (blink) B-scans get
NaN.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

LOGGER = logging.getLogger(__name__)

MAX_JUMP_PX = 3
JUMP_PENALTY = {"ilm": 0.04, "rpe": 0.15}  # score units per row jumped between A-scans
DEPTH_BONUS_PER_MM = 0.6  # the RPE is the deepest bright edge: score bonus per mm of depth
NEIGHBOUR_BAND_UM = {"ilm": 120.0, "rpe": 50.0}  # second pass: reach around the neighbours
BRIGHT_ABOVE = 0.35  # normalised mean above a boundary for the depth bonus to count
BLANK_CONTRAST = 0.3  # a B-scan with contrast below this share of the median is blank


@dataclass(frozen=True)
class Boundaries:
    """Boundaries of one volume in rows, float (frames, A-scans); NaN on blank B-scans."""

    ilm_px: np.ndarray
    rpe_px: np.ndarray
    blank_frames: tuple[int, ...]


def _box_means(col: np.ndarray, above: int, below: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean of the ``above`` rows above and ``below`` rows below every boundary index.

    ``col`` is (R, A); outputs are (R + 1, A): index k is the boundary between rows k-1 and k.
    """
    r = col.shape[0]
    c = np.concatenate([np.zeros((1, col.shape[1]), np.float64), np.cumsum(col, axis=0)])
    k = np.arange(r + 1)
    a0 = np.clip(k - above, 0, r)
    b1 = np.clip(k + below, 0, r)
    up = (c[k] - c[a0]) / np.maximum(k - a0, 1)[:, None]
    down = (c[b1] - c[k]) / np.maximum(b1 - k, 1)[:, None]
    return up, down


def _dp(score: np.ndarray, allowed: np.ndarray, penalty: float) -> np.ndarray:
    """Best path (max total score) through ``score`` (F, K, A); returns indices (F, A)."""
    f, k, a = score.shape
    s = np.where(allowed, score, -1e6)
    acc = s[:, :, 0].copy()
    back = np.zeros((f, k, a), dtype=np.int16)
    shifts = range(-MAX_JUMP_PX, MAX_JUMP_PX + 1)
    for col in range(1, a):
        best = np.full((f, k), -np.inf)
        arg = np.zeros((f, k), dtype=np.int16)
        for d in shifts:
            cand = np.full((f, k), -np.inf)
            if d >= 0:
                cand[:, : k - d] = acc[:, d:]
            else:
                cand[:, -d:] = acc[:, : k + d]
            cand -= penalty * abs(d)
            better = cand > best
            best = np.where(better, cand, best)
            arg = np.where(better, d, arg)
        acc = best + s[:, :, col]
        back[:, :, col] = arg
    path = np.zeros((f, a), dtype=np.int64)
    path[:, -1] = np.argmax(acc, axis=1)
    rows = np.arange(f)
    for col in range(a - 1, 0, -1):
        path[:, col - 1] = path[:, col] + back[rows, path[:, col], col]
    return path


def _refine(score: np.ndarray, path: np.ndarray) -> np.ndarray:
    """Sub-row position of each boundary (row units, ``k - 0.5``) by a parabola through it."""
    f, k, a = score.shape
    fi, ai = np.meshgrid(np.arange(f), np.arange(a), indexing="ij")
    p = np.clip(path, 2, k - 3)
    near = np.stack([score[fi, p + d, ai] for d in (-1, 0, 1)])
    p = p + np.argmax(near, axis=0) - 1  # the step filter's own peak next to the path
    s0, sm, sp = score[fi, p, ai], score[fi, p - 1, ai], score[fi, p + 1, ai]
    denom = sm - 2.0 * s0 + sp
    delta = np.where(np.abs(denom) > 1e-9, 0.5 * (sm - sp) / np.where(denom == 0, 1, denom), 0.0)
    return p + np.clip(delta, -0.5, 0.5) - 0.5


def _shadow(frame: np.ndarray) -> np.ndarray:
    """Per-A-scan transmission (vessel shadows): column signal over its lateral trend."""
    signal = frame.sum(axis=0, dtype=np.float64) - frame.shape[0] * float(np.percentile(frame, 10))
    signal = np.maximum(signal, 1e-3)
    trend = cv2.GaussianBlur(signal[None, :], (0, 0), sigmaX=25.0, sigmaY=0.1)[0]
    return np.clip(signal / np.maximum(trend, 1e-3), 0.25, 1.2).astype(np.float32)


def _normalise(volume: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
    out = np.empty(volume.shape, dtype=np.float32)
    contrast = np.zeros(volume.shape[0])
    for f in range(volume.shape[0]):
        frame = cv2.GaussianBlur(volume[f].astype(np.float32), (0, 0), sigmaX=2.5, sigmaY=0.6)
        frame = frame / _shadow(frame)[None, :]
        lo, hi = np.percentile(frame, (10.0, 99.5))
        contrast[f] = hi - lo
        out[f] = (frame - lo) / max(float(hi - lo), 1e-3)
    blank = tuple(int(i) for i in np.flatnonzero(contrast < BLANK_CONTRAST * np.median(contrast)))
    return out, blank


def _reference(bound: np.ndarray, f: int) -> np.ndarray | None:
    """Where boundary ``bound`` (F, A) lies on B-scan ``f`` by its neighbours (±2 B-scans),
    moved by their median axial offset from ``f``; None without neighbours."""
    near = [g for g in range(f - 2, f + 3) if g != f and 0 <= g < bound.shape[0]]
    near = [g for g in near if np.isfinite(bound[g]).all()]
    if not near:
        return None
    ref = np.median(bound[near], axis=0)
    return ref + float(np.median(bound[f] - ref))


def _pass(
    norm: np.ndarray,
    frames: list[int],
    axial_mm: float,
    prior: tuple[np.ndarray, np.ndarray] | None,
) -> tuple[np.ndarray, np.ndarray]:
    """ILM and RPE of ``frames``; with ``prior`` (ILM, RPE of the first pass), each B-scan's
    search is kept near what its neighbours found (:data:`NEIGHBOUR_BAND_UM`)."""
    um = axial_mm * 1000.0
    rows = norm.shape[1]
    w_rpe = max(2, round(20.0 / um))
    w_ilm = max(2, round(15.0 / um))
    w_vit = max(3, round(40.0 / um))
    w_edge = max(1, round(10.0 / um))  # narrower than the thin RPE band and the foveal ILM
    k = np.arange(rows + 1)[None, :, None]
    rpe_score = np.empty((len(frames), rows + 1, norm.shape[2]), dtype=np.float32)
    ilm_score = np.empty_like(rpe_score)
    rpe_edge = np.empty_like(rpe_score)  # symmetric step filters, for the sub-row position
    ilm_edge = np.empty_like(rpe_score)
    rpe_band = np.ones(rpe_score.shape, dtype=bool)
    ilm_band = np.ones(rpe_score.shape, dtype=bool)
    for i, f in enumerate(frames):
        up, down = _box_means(norm[f], w_rpe, w_rpe)
        bonus = np.where(up > BRIGHT_ABOVE, DEPTH_BONUS_PER_MM * k[0] * axial_mm, 0.0)
        rpe_score[i] = up - down + 0.5 * up + bonus
        near_up, near_down = _box_means(norm[f], w_edge, w_edge)
        rpe_edge[i] = near_up - near_down
        ilm_edge[i] = near_down - near_up
        up_long, _ = _box_means(norm[f], w_vit, 1)
        _, below = _box_means(norm[f], 1, w_ilm)
        ilm_score[i] = below - 2.0 * np.clip(up_long, 0.0, None)
        if prior is not None:
            for bound, band, name in ((prior[1], rpe_band, "rpe"), (prior[0], ilm_band, "ilm")):
                ref = _reference(bound, f)
                if ref is not None:
                    reach = NEIGHBOUR_BAND_UM[name] / um
                    band[i] = np.abs(k[0] - 0.5 - ref[None, :]) <= reach
    edge = (k > w_rpe) & (k < rows - w_rpe)
    rpe_path = _dp(rpe_score, edge & rpe_band, JUMP_PENALTY["rpe"])
    lo = rpe_path[:, None, :] - round(1000.0 / um)
    hi = rpe_path[:, None, :] - round(80.0 / um)
    allowed = (k >= lo) & (k <= hi) & (k >= 1) & ilm_band
    ilm_path = _dp(ilm_score, allowed, JUMP_PENALTY["ilm"])
    return _refine(ilm_edge, ilm_path), _refine(rpe_edge, rpe_path)


def segment_volume(volume: np.ndarray, axial_mm: float, chunk: int = 16) -> Boundaries:
    """ILM and outer RPE boundary of every B-scan of ``volume`` (frames, rows, A-scans).

    Two passes: each B-scan alone, then each B-scan again within a band around what its
    neighbours found, so one B-scan cannot wander off to another edge.
    """
    if volume.ndim != 3:
        raise ValueError(f"expected a (frames, rows, A-scans) volume, got shape {volume.shape}")
    if not axial_mm > 0:
        raise ValueError(f"axial spacing must be > 0, got {axial_mm!r}")
    norm, blank = _normalise(volume)
    f_total, _, ascans = volume.shape
    prior: tuple[np.ndarray, np.ndarray] | None = None
    for _ in range(2):
        ilm_out = np.full((f_total, ascans), np.nan)
        rpe_out = np.full((f_total, ascans), np.nan)
        for start in range(0, f_total, chunk):
            frames = [f for f in range(start, min(start + chunk, f_total)) if f not in blank]
            if frames:
                ilm_out[frames], rpe_out[frames] = _pass(norm, frames, axial_mm, prior)
        prior = (ilm_out, rpe_out)
    LOGGER.debug("segmented %d B-scans (%d blank)", f_total, len(blank))
    return Boundaries(ilm_px=ilm_out, rpe_px=rpe_out, blank_frames=blank)
