"""Draw a case's OCT volume with its ground truth: :func:`render_oct`.

Per B-scan: the layer surfaces of :mod:`appliance.synth.oct.anatomy` sampled at the A-scan
positions are turned into a reflectivity map (layer table, cysts and subretinal fluid dark,
choroidal vessel lumens, vessel shadows), blurred by the axial/lateral point spread, multiplied
by the signal level, the depth fall-off and gamma speckle (shape :data:`SPECKLE_LOOKS`), and an
additive Rayleigh noise floor is added; the result is stored as uint8 (display units, 0-255).

Acquisition defects (``case.defect``): ``low_signal`` scales the signal by ``1 - 0.85 s``;
``clipped`` places the retina so that the ILM of a share ``0.5 s`` of the A-scans lies above
the frame; ``decentred`` moved the fovea already (in the anatomy); ``motion`` adds one axial
jump of ``80 s`` µm and one to three of 30-80 % of it, lateral jumps of up to ``0.15 s`` mm
and a small tremor; ``blink`` blanks a run of ``round(0.4 s F)`` B-scans (noise floor only).

Truth boundaries are in row coordinates (row ``i`` is centred on ``i``): row ``i`` lies below a
boundary ``b`` exactly when ``i >= b``. They follow what the image shows (motion included);
blank B-scans have NaN boundaries.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from appliance.synth.oct.anatomy import (
    FLUID_REFLECTIVITY,
    LAYER_NAMES,
    LAYERS,
    cyst_mask,
    surfaces,
    vessel_shadow,
)
from appliance.synth.oct.case import OctCase, anatomy_of

LOGGER = logging.getLogger(__name__)

SPECKLE_LOOKS = 4.0  # gamma shape of the multiplicative speckle (frames averaged, roughly)
NOISE_FLOOR = 0.03  # Rayleigh scale of the additive noise, display units 0-1
DISPLAY_FULL_SCALE = 1.6  # display value mapped to 255
FALL_OFF = 0.6  # signal at the bottom of the frame = exp(-FALL_OFF) of the top's

_ILM, _RPE_OUTER, _BM = 0, 11, 12  # rows of surfaces(): see anatomy.surfaces
_SRF_LAYER = LAYER_NAMES.index("srf")
_CHOROID = LAYER_NAMES.index("choroid")
_TABLE = np.array([value for _, value in LAYERS], dtype=np.float32)


@dataclass(frozen=True)
class OctRendering:
    """A rendered volume and its truth, all indexed (frame, row, A-scan) like the volume."""

    case: OctCase
    volume: np.ndarray  # uint8 (F, R, A)
    spacing_mm: tuple[float, float, float]  # (frame, row, A-scan)
    ilm_px: np.ndarray  # float (F, A), NaN on blank B-scans
    rpe_px: np.ndarray  # outer boundary of the RPE band, float (F, A)
    bm_px: np.ndarray  # Bruch's membrane, float (F, A)
    thickness_um: np.ndarray  # ILM-RPE as scanned, float (F, A)
    fluid_mask: np.ndarray  # bool (F, R, A): cysts and subretinal fluid
    fovea_index: tuple[float, float]  # (frame, A-scan) of the true fovea, fractional
    blank_frames: tuple[int, ...]


@dataclass(frozen=True)
class _Acquisition:
    gain: float
    dz_um: np.ndarray  # (F,) axial offset per B-scan
    dx_mm: np.ndarray  # (F,) lateral offset per B-scan
    blank: tuple[int, ...]
    top_um: float  # where the highest point of the ILM lands (negative = clipped)


def _acquisition(case: OctCase, rng: np.random.Generator) -> _Acquisition:
    f = case.geometry.frames
    s = case.defect_strength
    gain = float(rng.uniform(0.85, 1.1))
    dz = np.zeros(f)
    dx = np.zeros(f)
    blank: tuple[int, ...] = ()
    top = float(rng.uniform(0.12, 0.3)) * case.geometry.depth_mm * 1000.0
    if case.defect == "low_signal":
        gain *= 1.0 - 0.85 * s
    elif case.defect == "motion":
        amp = 80.0 * s
        jumps = rng.choice(np.arange(1, f), size=int(rng.integers(2, 5)), replace=False)
        for n, at in enumerate(jumps):  # the first jump is the full amplitude
            dz[at:] += rng.choice([-1.0, 1.0]) * (1.0 if n == 0 else rng.uniform(0.3, 0.8)) * amp
            dx[at:] += rng.choice([-1.0, 1.0]) * rng.uniform(0.3, 1.0) * 0.15 * s
        dz += rng.normal(0.0, 0.1 * amp, size=f)
        dz -= np.median(dz)
    elif case.defect == "blink":
        n = int(round(0.4 * s * f))
        if n:
            start = int(rng.integers(0, f - n + 1))
            blank = tuple(range(start, start + n))
    elif case.defect == "clipped":
        top = -1.0  # set from the thickness once the surfaces are known
    return _Acquisition(gain, dz, dx, blank, top)


def _choroid_texture(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Choroidal stroma with darker vessel lumens: a multiplier in [0.5, 1]."""
    noise = rng.standard_normal(shape).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), sigmaX=5.0, sigmaY=3.0)
    smooth = smooth / np.float32(float(smooth.std()) + 1e-6)
    return (1.0 - 0.5 / (1.0 + np.exp(-4.0 * (smooth - 0.8)))).astype(np.float32)


def render_oct(case: OctCase) -> OctRendering:
    """Render ``case``; see the module docstring. A pure function of the case."""
    g = case.geometry
    anat = anatomy_of(case)
    _, vessel_seed, speckle_seed, acq_seed = np.random.SeedSequence(case.seed).spawn(4)
    acq = _acquisition(case, np.random.default_rng(acq_seed))
    rng = np.random.default_rng(speckle_seed)
    _, axial_mm, _ = g.spacing_mm
    ax_um = axial_mm * 1000.0
    x0, y0 = g.grid_mm()
    x = x0 + acq.dx_mm[:, None]  # (F, A): where each A-scan really looked
    y = np.broadcast_to(y0, x.shape)
    tops = surfaces(anat, x, y) + acq.dz_um[None, :, None]  # (14, F, A) µm
    thickness = tops[_RPE_OUTER] - tops[_ILM]
    if case.defect == "clipped":  # a share 0.5 s of the A-scans has its ILM above the frame
        shift = -float(np.quantile(tops[_ILM], 0.5 * case.defect_strength))
    else:
        shift = acq.top_um - float(tops[_ILM].min())
    tops = tops + shift
    shadow = vessel_shadow(case.eye, anat.fovea, np.random.default_rng(vessel_seed), x, y)

    rows_um = (np.arange(g.rows, dtype=np.float64) + 0.5) * ax_um
    fall = np.exp(-FALL_OFF * (rows_um / (g.depth_mm * 1000.0)) ** 2).astype(np.float32)[:, None]
    volume = np.empty(g.shape, dtype=np.uint8)
    fluid = np.zeros(g.shape, dtype=bool)
    for f in range(g.frames):
        t = tops[:, f, :]  # (14, A)
        layer = (rows_um[None, :, None] >= t[:, None, :]).sum(axis=0)  # (R, A)
        refl = _TABLE[layer]
        z_anat = rows_um[:, None] - shift - acq.dz_um[f]
        cysts = cyst_mask(anat, x[f][None, :], y[f][None, :], z_anat)
        fluid[f] = cysts | (layer == _SRF_LAYER)
        refl = np.where(cysts, np.float32(FLUID_REFLECTIVITY), refl)
        choroid = layer == _CHOROID
        refl = np.where(choroid, refl * _choroid_texture(rng, refl.shape), refl)
        below_vessel = rows_um[:, None] >= t[_ILM][None, :] + 40.0
        in_vessel = (rows_um[:, None] >= t[_ILM][None, :] + 10.0) & ~below_vessel
        dark = (1.0 - shadow[f]).astype(np.float32)[None, :]
        refl = np.where(below_vessel, refl * shadow[f].astype(np.float32)[None, :], refl)
        refl = np.where(in_vessel, refl + 0.5 * dark, refl)
        refl = cv2.GaussianBlur(refl.astype(np.float32), (0, 0), sigmaX=1.0, sigmaY=0.8)
        signal = refl * fall * np.float32(acq.gain)
        if f in acq.blank:
            signal = np.zeros_like(signal)
        speckle = rng.gamma(SPECKLE_LOOKS, 1.0 / SPECKLE_LOOKS, size=signal.shape)
        noise = rng.rayleigh(NOISE_FLOOR, size=signal.shape)
        display = (signal * speckle + noise) * (255.0 / DISPLAY_FULL_SCALE)
        volume[f] = np.clip(np.rint(display), 0, 255).astype(np.uint8)

    def rows_of(k: int) -> np.ndarray:
        out = tops[k] / ax_um - 0.5
        out[list(acq.blank)] = np.nan
        return out

    sp_frame, _, sp_lat = g.spacing_mm
    fx, fy = anat.fovea
    fovea_index = ((fy + g.height_mm / 2) / sp_frame, (fx + g.width_mm / 2) / sp_lat)
    LOGGER.debug("rendered OCT case %d (%s)", case.seed, case.defect or "no defect")
    return OctRendering(
        case=case,
        volume=volume,
        spacing_mm=g.spacing_mm,
        ilm_px=rows_of(_ILM),
        rpe_px=rows_of(_RPE_OUTER),
        bm_px=rows_of(_BM),
        thickness_um=thickness,
        fluid_mask=fluid,
        fovea_index=fovea_index,
        blank_frames=acq.blank,
    )


def render_oct_volume(case: OctCase) -> np.ndarray:
    """Only the volume of :func:`render_oct`, uint8 (frames, rows, A-scans)."""
    return render_oct(case).volume
