"""A small deterministic procedural colour fundus photograph.

The picture is built in layers, each a pure function of a :class:`FundusLayout` and a seeded
random generator: background colour with vignetting and choroidal texture, macula, optic disc
with cup, the retinal vessel tree, the circular camera mask and sensor noise. All lengths are
fractions of the field radius, so the same seed gives the same eye at any resolution.

Orientation follows a standard fundus photograph: the optic disc lies nasally, which is the
viewer's right for a right eye ("R") and the viewer's left for a left eye ("L"); the fovea
lies about 2.5 disc diameters temporal to the disc, near the centre of the field.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np

from appliance.synth.layout import FundusLayout, fundus_layout, streams
from appliance.synth.vessels import (
    ARTERY_ABSORPTION,
    VEIN_ABSORPTION,
    grow_vessel_tree,
    vessel_masks,
)

__all__ = [
    "FundusLayout",
    "apply_macula",
    "background",
    "box",
    "fundus_layout",
    "make_fundus",
    "radial",
    "render_fundus",
    "smooth_noise",
]

LOGGER = logging.getLogger(__name__)

FloatImage = np.ndarray  # float32 HxW or HxWx3, values in DN (0..255)

# Centre-of-field RGB colour of a lightly and a darkly pigmented fundus.
_LIGHT_FUNDUS = np.array([236.0, 124.0, 60.0], dtype=np.float32)
_DARK_FUNDUS = np.array([160.0, 68.0, 30.0], dtype=np.float32)
# Neuroretinal rim and cup of the optic disc.
_RIM_COLOUR = np.array([244.0, 168.0, 100.0], dtype=np.float32)
_CUP_COLOUR = np.array([255.0, 226.0, 172.0], dtype=np.float32)


def smooth_noise(
    rng: np.random.Generator, shape: tuple[int, int], cells: float, scale_px: float
) -> FloatImage:
    """Zero-mean, unit-std band-limited noise with features about ``scale_px`` pixels across.

    ``cells`` caps the size of the random grid that is upsampled, so big images stay cheap.
    """
    height, width = shape
    gh = int(np.clip(round(height / scale_px), 2, cells))
    gw = int(np.clip(round(width / scale_px), 2, cells))
    grid = rng.standard_normal((gh + 2, gw + 2)).astype(np.float32)
    big = (width + 2 * width // gw, height + 2 * height // gh)
    up = cv2.resize(grid, big, interpolation=cv2.INTER_CUBIC)
    oy, ox = height // gh, width // gw
    out = np.ascontiguousarray(up[oy : oy + height, ox : ox + width])
    std = float(out.std())
    return (out - float(out.mean())) / (std if std > 0 else 1.0)


def radial(layout: FundusLayout) -> np.ndarray:
    """Distance from the field centre in field radii, float32 HxW."""
    xs = np.arange(layout.width, dtype=np.float32)[None, :] - np.float32(layout.field_cx)
    ys = np.arange(layout.height, dtype=np.float32)[:, None] - np.float32(layout.field_cy)
    return np.sqrt(xs * xs + ys * ys) / np.float32(layout.field_radius)


def box(
    layout: FundusLayout, cx: float, cy: float, half: float
) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray]:
    """Slices of a square window around (cx, cy) and its offsets from there (row, column)."""
    x0, x1 = max(0, int(cx - half)), min(layout.width, int(cx + half) + 2)
    y0, y1 = max(0, int(cy - half)), min(layout.height, int(cy + half) + 2)
    dx = np.arange(x0, x1, dtype=np.float32)[None, :] - np.float32(cx)
    dy = np.arange(y0, y1, dtype=np.float32)[:, None] - np.float32(cy)
    return (slice(y0, y1), slice(x0, x1)), dx, dy


def background(layout: FundusLayout, rng: np.random.Generator, rho: np.ndarray) -> FloatImage:
    """Orange-red fundus with vignetting, choroidal mottling and (when light) tigroid vessels."""
    shape = (layout.height, layout.width)
    p = layout.pigmentation
    base = (1.0 - p) * _LIGHT_FUNDUS + p * _DARK_FUNDUS
    r = layout.field_radius
    mottle = smooth_noise(rng, shape, 64, r / 10.0)
    grain = smooth_noise(rng, shape, 512, r / 90.0)
    # Tigroid pattern: the choroidal vessels show through a thin pigment epithelium.
    ridges = 1.0 - np.abs(smooth_noise(rng, shape, 96, r / 14.0))
    tigroid = np.clip((ridges - 0.6) / 0.4, 0.0, 1.0) * np.clip(rho - 0.35, 0.0, 1.0)
    shade = 1.0 + 0.03 * mottle + 0.012 * grain - (0.08 * (1.0 - p) + 0.02) * tigroid
    shade *= np.clip(1.0 - 0.38 * rho**2.4, 0.0, 1.0)  # vignetting
    rho2 = rho * rho
    img = np.empty((*shape, 3), dtype=np.float32)
    for c, fade in enumerate((0.0, 0.10, 0.12)):  # green and blue fade faster outwards
        img[..., c] = shade * (base[c] * (1.0 - fade * rho2))
    return img


def apply_macula(img: FloatImage, layout: FundusLayout) -> None:
    dd = 2.0 * layout.disc_radius
    window, dx, dy = box(layout, layout.fovea_cx, layout.fovea_cy, 2.5 * dd)
    d2 = (dx * dx + dy * dy) / np.float32(dd * dd)
    depth = 0.18 + 0.10 * layout.pigmentation
    shade = 1.0 - depth * np.exp(-d2 / 0.8) - 0.12 * np.exp(-d2 / 0.04)
    reflex = 0.10 * 255.0 * np.exp(-d2 / 0.0012)
    patch = img[window] * shade[..., None]
    patch += reflex[..., None] * np.array([0.6, 0.5, 0.4], dtype=np.float32)
    img[window] = patch


def _apply_disc(img: FloatImage, layout: FundusLayout, rng: np.random.Generator) -> None:
    rx = layout.disc_radius
    window, dx, dy = box(layout, layout.disc_cx, layout.disc_cy, 1.6 * rx)
    patch = img[window]
    ell = np.sqrt((dx / rx) ** 2 + (dy / (1.08 * rx)) ** 2)  # the disc is a little taller
    # Faint pale peripapillary halo, then the disc with a soft edge.
    halo = 0.10 * np.exp(-(((ell - 1.0) / 0.25) ** 2))
    patch += halo[..., None] * (_RIM_COLOUR - patch)
    disc = np.clip((1.0 - ell) / 0.08 + 0.5, 0.0, 1.0)
    mottle = 1.0 + 0.04 * smooth_noise(rng, ell.shape, 64, rx / 4.0)
    rim = (_RIM_COLOUR * (1.0 - 0.08 * layout.pigmentation)) * mottle[..., None]
    patch += disc[..., None] * (rim - patch)
    cup_dx = dx + np.float32(layout.nasal_sign * 0.12 * rx)  # cups sit slightly temporally
    cup_r = layout.cup_ratio * rx
    cell = np.sqrt((cup_dx / cup_r) ** 2 + (dy / (1.1 * cup_r)) ** 2)
    cup = np.clip((1.0 - cell) / 0.35, 0.0, 1.0) ** 1.5
    patch += cup[..., None] * (_CUP_COLOUR - patch)
    img[window] = patch


def _apply_vessels(img: FloatImage, layout: FundusLayout, rng: np.random.Generator) -> None:
    segments = grow_vessel_tree(layout, rng)
    veins, arteries, reflex = vessel_masks(layout, segments)
    img *= 1.0 - veins[..., None] * VEIN_ABSORPTION
    img *= 1.0 - arteries[..., None] * ARTERY_ABSORPTION
    img += (0.06 * reflex)[..., None] * (np.float32(255.0) - img)


def _apply_camera(
    img: FloatImage, layout: FundusLayout, rng: np.random.Generator, rho: np.ndarray
) -> np.ndarray:
    """Circular field stop, black surround and sensor noise; returns uint8 RGB."""
    edge_px = max(1.0, layout.field_radius / 300.0)
    soft = np.clip((1.0 - rho) * np.float32(layout.field_radius / edge_px) + 0.5, 0.0, 1.0)
    img *= soft[..., None]
    img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(1.8)
    img += np.float32(2.5)
    return np.clip(img, 0, 255).astype(np.uint8)


def render_fundus(layout: FundusLayout, seed: int) -> np.ndarray:
    """Draw ``layout`` as an RGB uint8 photograph; the random details come from ``seed``."""
    _, texture_rng, vessel_rng, noise_rng = streams(seed)
    rho = radial(layout)
    img = background(layout, texture_rng, rho)
    apply_macula(img, layout)
    _apply_disc(img, layout, texture_rng)
    _apply_vessels(img, layout, vessel_rng)
    return _apply_camera(img, layout, noise_rng, rho)


def make_fundus(
    seed: int, size: tuple[int, int] = (1024, 1024), eye: str = "R", pigmentation: float = 0.5
) -> np.ndarray:
    """A synthetic colour fundus photograph: RGB uint8 of shape ``(height, width, 3)``.

    ``size`` is ``(height, width)``; ``eye`` is ``"R"`` or ``"L"`` (the two mirror each other);
    ``pigmentation`` runs from 0 (light, orange, tigroid) to 1 (dark brown-red). The same
    arguments always give the same array.
    """
    layout = fundus_layout(seed, size, eye, pigmentation)
    return render_fundus(layout, seed)
