"""Image-quality measurements on a fundus photograph normalised to a fixed field size.

The image functions here take arrays at the normalised scale, where the field radius is
:data:`NORMALISED_RADIUS` pixels, so the numbers do not depend on the camera's resolution. The
masks passed in select field pixels (inside the circle and inside the frame). The last two
functions judge the field itself: where it sits in the frame and how fundus-like it looks.
"""

from __future__ import annotations

import logging
import math

import cv2
import numpy as np

from appliance.quality.field import FieldFit

LOGGER = logging.getLogger(__name__)

NORMALISED_RADIUS = 256.0  # field radius in pixels at which all measurements are taken
SATURATED_DN = 250  # a channel value at or above this counts as clipped
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601


def luminance(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma of an HxWx3 image as float32, DN."""
    out = cv2.transform(rgb.astype(np.float32), _LUMA[None, :])
    return out if out.ndim == 2 else out[..., 0]


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur; wide ones are done on a smaller copy (same result to a few percent)."""
    if sigma < 6.0:
        return cv2.GaussianBlur(img, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    k = int(sigma // 3)
    h, w = img.shape[:2]
    small = cv2.resize(img, (-(-w // k), -(-h // k)), interpolation=cv2.INTER_AREA)
    rest = float(np.sqrt(max(sigma * sigma - (k * k - 1) / 12.0, 1.0))) / k
    small = cv2.GaussianBlur(small, (0, 0), rest, borderType=cv2.BORDER_REFLECT)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _as_u8(mask: np.ndarray) -> np.ndarray:
    return mask.astype(np.uint8)


def fill_outside(channel: np.ndarray, inside: np.ndarray, sigma: float = 12.0) -> np.ndarray:
    """``channel`` (float32) with the pixels outside ``inside`` replaced by a smooth extension.

    Normalised convolution: blurring the masked image and dividing by the blurred mask
    continues the field's values outwards, so later filters see no black edge.
    """
    weight = inside.astype(np.float32)
    spread = _blur(channel * weight, sigma)
    norm = _blur(weight, sigma)
    fallback = float(cv2.mean(channel, mask=_as_u8(inside))[0]) if inside.any() else 0.0
    extension = np.where(norm > 1e-4, spread / np.maximum(norm, 1e-4), fallback)
    return np.where(inside, channel, extension).astype(np.float32)


def focus(green: np.ndarray, mask: np.ndarray) -> float:
    """Sharpness: RMS of fine detail (1-2 px) over RMS of coarser detail (2-6 px).

    A ratio of two band-pass energies of the green channel, so it does not change with
    exposure or contrast, only with how much of the finest detail survives. Blur lowers it.
    """
    if not mask.any():
        return 0.0
    mid = _blur(green, 2.0)
    fine = _blur(green, 0.8) - mid
    coarse = mid - _blur(green, 6.0)
    m8 = _as_u8(mask)
    coarse_energy = float(cv2.mean(coarse * coarse, mask=m8)[0])
    if coarse_energy <= 1e-6:
        return 0.0
    return float(np.sqrt(cv2.mean(fine * fine, mask=m8)[0] / coarse_energy))


def exposure(
    rgb: np.ndarray, luma: np.ndarray, mask: np.ndarray
) -> tuple[float, tuple[float, float, float]]:
    """Mean luma inside the field (DN) and the fraction of clipped pixels per channel.

    ``rgb`` is the uint8 image, ``luma`` its :func:`luminance`.
    """
    count = int(np.count_nonzero(mask))
    if count == 0:
        return 0.0, (0.0, 0.0, 0.0)
    mean_luma = float(cv2.mean(luma, mask=_as_u8(mask))[0])
    clipped = [np.count_nonzero((rgb[..., c] >= SATURATED_DN) & mask) / count for c in range(3)]
    return mean_luma, (clipped[0], clipped[1], clipped[2])


def contrast(green: np.ndarray, mask: np.ndarray) -> float:
    """Structure contrast: spread (5th to 95th percentile) of smoothed, flat-fielded green.

    Green is divided by its own heavy blur, which removes vignetting and exposure; what stays
    is vessels, disc and macula relative to the background. Haze lowers it.
    """
    if not mask.any():
        return 0.0
    background = _blur(green, 24.0)
    detail = _blur(green, 4.0) / np.maximum(background, 1.0)
    lo, hi = np.percentile(detail[mask], [5.0, 95.0])
    return float(hi - lo)


def unevenness(
    lum: np.ndarray, dist: np.ndarray, angle: np.ndarray, inside: np.ndarray | None = None
) -> tuple[float, float]:
    """Illumination imbalance: (1 - darkest / brightest sector median of luma, darkest median).

    Eight 45-degree sectors of the annulus between 35 % and 90 % of the field radius; medians
    ignore the disc and the vessels. Sectors the frame or a crop cuts away (fewer than a third
    of their pixels present; ``inside`` marks the field's pixels) are skipped. 0 = even, 1 = one
    side black; the darkest median is in DN.
    """
    ring = (dist >= 0.35 * NORMALISED_RADIUS) & (dist <= 0.9 * NORMALISED_RADIUS)
    if inside is not None:
        ring &= inside
    sector = (np.floor((angle[ring] + np.pi) / (np.pi / 4.0)).astype(np.int32)) % 8
    values = lum[ring]
    full = np.pi * NORMALISED_RADIUS**2 * (0.9**2 - 0.35**2) / 8.0
    medians = []
    for s in range(8):
        sel = values[sector == s]
        if len(sel) >= full / 3.0:
            medians.append(float(np.median(sel)))
    if len(medians) < 3 or max(medians) <= 0:
        return 0.0, float(np.median(values)) if len(values) else 0.0
    return float(1.0 - min(medians) / max(medians)), float(min(medians))


def red_green_ratio(rgb: np.ndarray, mask: np.ndarray) -> float:
    """Mean red over mean green of unclipped field pixels; about 2 for a fundus, 1 for grey.

    ``rgb`` is uint8. When almost everything is clipped, all field pixels are used.
    """
    count = int(np.count_nonzero(mask))
    if count == 0:
        return 0.0
    brightest = np.maximum(np.maximum(rgb[..., 0], rgb[..., 1]), rgb[..., 2])
    unclipped = mask & (brightest < SATURATED_DN)
    use = unclipped if np.count_nonzero(unclipped) >= 0.05 * count else mask
    red, green, _, _ = cv2.mean(rgb, mask=_as_u8(use))
    return float(min(100.0, red / max(green, 0.5)))


def blue_green_ratio(rgb: np.ndarray, mask: np.ndarray) -> float:
    """Mean blue over mean green of the field; a fundus reflects little blue (well under 1)."""
    count = int(np.count_nonzero(mask))
    if count == 0:
        return 0.0
    _, green, blue, _ = cv2.mean(rgb, mask=_as_u8(mask))
    return float(min(100.0, blue / max(green, 0.5)))


def center_offset(cx: float, cy: float, radius: float, width: int, height: int) -> float:
    """Distance from the frame centre to the field centre, in field radii."""
    return math.hypot(cx - (width - 1) / 2.0, cy - (height - 1) / 2.0) / radius


def _ramp(value: float, lo: float, hi: float) -> float:
    return float(np.clip((value - lo) / (hi - lo), 0.0, 1.0))


def fundus_likeness(
    fit: FieldFit | None,
    field_size: float,
    red_green: float,
    blue_green: float,
    colour_cue: bool,
) -> float:
    """How much a picture looks like a fundus photograph, 0-1: the weakest of its cues.

    A bright field whose outline is a circle, possibly cut by the frame or by straight crop
    edges, that it fills, on a dark surround, filling a fair part of the frame and, when
    ``colour_cue`` is set, red-orange inside. A crop that fills the whole frame has no outline
    and no surround to judge: then only colour can speak for it, and it must speak clearly (a
    greyscale picture that fills the frame is not accepted). Each cue ramps from 0 (clearly
    not) to 1 (as a fundus photograph) between the two bounds written next to it.
    """
    if fit is None:
        return 0.0
    cues = [
        _ramp(fit.circularity, 0.4, 0.7),  # the outline is a circle, frame and crop edges
        _ramp(fit.iou, 0.6, 0.9),  # and the bright area fills it
        _ramp(field_size, 0.25, 0.5),  # filling a fair part of the frame
    ]
    if fit.has_surround:
        cues += [
            _ramp(-fit.surround_ratio, -0.5, -0.2),  # on a dark surround
            _ramp(fit.surround_step, 3.0, 8.0),  # that is clearly darker than the field (DN)
        ]
    if colour_cue and fit.has_surround:
        cues.append(_ramp(red_green, 1.15, 1.5))  # and red-orange inside
    elif colour_cue:  # no surround to judge: strongly red-orange, with little blue
        cues += [_ramp(red_green, 1.4, 1.8), _ramp(-blue_green, -0.8, -0.5)]
    elif not fit.has_surround:
        cues.append(0.0)
    return min(cues)
