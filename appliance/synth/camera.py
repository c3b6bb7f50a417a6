"""Named fundus camera profiles and the camera model that turns a drawn retina into a photo.

A profile fixes what one kind of camera adds to every picture it takes: sensor resolution,
field of view (which sets the disc's size relative to the field), how much of the frame the
round field fills, colour cast, extra vignetting, exposure, sensor noise, JPEG quality, and an
optional small marker notch cut into the field edge (some cameras mark the field orientation
that way). The profiles are generic types, not copies of any one vendor's camera.

:func:`optics` applies the lens and field stop to the float picture (colour cast, vignetting,
black surround, notch) and returns uint8; :func:`sensor` adds shot and read noise;
:func:`jpeg_roundtrip` compresses at the profile's quality, as the camera would export.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import cv2
import numpy as np

from appliance.synth.layout import FundusLayout
from appliance.synth.look import NEUTRAL, Look

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class CameraProfile:
    """What one kind of fundus camera does to every picture."""

    name: str
    size: tuple[int, int]  # native (height, width), pixels
    field_deg: float  # angle of view across the round field
    field_fill: float  # field diameter / shorter frame side
    cast: tuple[float, float, float]  # RGB gains (white balance)
    exposure: float  # overall gain
    vignetting: float  # extra light lost at the field edge, 0..1
    read_noise: float  # DN, standard deviation
    shot_noise: float  # DN per sqrt(DN)
    jpeg_quality: int
    notch_deg: float | None  # where the field-edge marker sits (0 right, 90 down), or None

    @property
    def megapixels(self) -> float:
        return self.size[0] * self.size[1] / 1e6


CAMERAS: dict[str, CameraProfile] = {
    profile.name: profile
    for profile in (
        CameraProfile(
            name="desktop45",
            size=(1536, 2048),
            field_deg=45.0,
            field_fill=0.93,
            cast=(1.0, 1.0, 1.0),
            exposure=1.0,
            vignetting=0.12,
            read_noise=1.2,
            shot_noise=0.10,
            jpeg_quality=95,
            notch_deg=0.0,
        ),
        CameraProfile(
            name="desktop50",
            size=(1728, 2592),
            field_deg=50.0,
            field_fill=0.95,
            cast=(0.96, 1.0, 1.06),
            exposure=1.04,
            vignetting=0.10,
            read_noise=1.0,
            shot_noise=0.08,
            jpeg_quality=95,
            notch_deg=None,
        ),
        CameraProfile(
            name="nonmyd45",
            size=(1200, 1600),
            field_deg=45.0,
            field_fill=0.92,
            cast=(1.04, 1.0, 0.88),
            exposure=0.95,
            vignetting=0.2,
            read_noise=1.8,
            shot_noise=0.14,
            jpeg_quality=90,
            notch_deg=270.0,
        ),
        CameraProfile(
            name="handheld45",
            size=(960, 1280),
            field_deg=45.0,
            field_fill=0.97,
            cast=(1.06, 0.97, 0.92),
            exposure=0.9,
            vignetting=0.3,
            read_noise=2.6,
            shot_noise=0.2,
            jpeg_quality=85,
            notch_deg=None,
        ),
        CameraProfile(
            name="compact50",
            size=(1080, 1440),
            field_deg=50.0,
            field_fill=0.94,
            cast=(0.97, 1.04, 0.97),
            exposure=1.0,
            vignetting=0.22,
            read_noise=2.2,
            shot_noise=0.16,
            jpeg_quality=88,
            notch_deg=135.0,
        ),
        CameraProfile(
            name="sensor_cut45",  # 3:2 sensor; the field circle is cut at top and bottom
            size=(2336, 3504),
            field_deg=45.0,
            field_fill=1.12,
            cast=(1.08, 0.94, 0.82),
            exposure=1.0,
            vignetting=0.15,
            read_noise=1.0,
            shot_noise=0.08,
            jpeg_quality=92,
            notch_deg=None,
        ),
        CameraProfile(
            name="export_crop",  # exported as a rectangle cut inside the field on every side
            size=(1152, 1440),
            field_deg=45.0,
            field_fill=1.3,
            cast=(1.02, 0.98, 0.9),
            exposure=0.97,
            vignetting=0.25,
            read_noise=1.6,
            shot_noise=0.12,
            jpeg_quality=88,
            notch_deg=None,
        ),
        CameraProfile(
            name="legacy_vga",  # an older low-resolution camera, square-ish frame
            size=(584, 565),
            field_deg=45.0,
            field_fill=0.95,
            cast=(1.0, 0.9, 0.72),
            exposure=0.96,
            vignetting=0.25,
            read_noise=2.4,
            shot_noise=0.18,
            jpeg_quality=80,
            notch_deg=None,
        ),
        CameraProfile(
            name="widefield60",
            size=(1800, 1800),
            field_deg=60.0,
            field_fill=0.94,
            cast=(1.04, 0.96, 0.88),
            exposure=1.0,
            vignetting=0.3,
            read_noise=1.4,
            shot_noise=0.1,
            jpeg_quality=92,
            notch_deg=None,
        ),
    )
}


def optics(
    img: np.ndarray,
    layout: FundusLayout,
    profile: CameraProfile,
    look: Look = NEUTRAL,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Colour cast, vignetting and the round field stop (with its notch): float RGB → uint8.

    ``look`` adds the photograph's own white balance and a grey, noisy surround (its noise
    needs ``rng``)."""
    h, w = layout.height, layout.width
    xs = (np.arange(w, dtype=np.float32) - np.float32(layout.field_cx))[None, :]
    ys = (np.arange(h, dtype=np.float32) - np.float32(layout.field_cy))[:, None]
    rho = np.sqrt(xs * xs + ys * ys) / np.float32(layout.field_radius)
    edge_px = max(1.0, layout.field_radius / 300.0)
    gain = np.clip((1.0 - rho) * np.float32(layout.field_radius / edge_px) + 0.5, 0.0, 1.0)
    gain *= 1.0 - np.float32(profile.vignetting) * np.clip(rho, 0.0, 1.0) ** 4
    if profile.notch_deg is not None:
        gain *= _notch(layout, profile.notch_deg, xs, ys)
    cast = np.asarray(profile.cast, np.float32) * np.asarray(look.cast, np.float32)
    cast *= np.float32(profile.exposure)
    out = img * gain[..., None]
    out *= cast
    out += np.float32(look.black_level)
    if look.surround_noise > 0 and rng is not None:
        surround = (gain < 0.5)[..., None]
        noise = rng.standard_normal(out.shape, dtype=np.float32) * np.float32(look.surround_noise)
        out += np.where(surround, noise, np.float32(0.0))
    return np.clip(out, 0, 255).astype(np.uint8)


def _notch(layout: FundusLayout, angle_deg: float, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """0 inside a small square marker cut into the field edge at ``angle_deg``, else 1."""
    r = layout.field_radius
    a = math.radians(angle_deg)
    ux, uy = np.float32(math.cos(a)), np.float32(math.sin(a))
    along = xs * ux + ys * uy  # towards the edge
    across = -xs * uy + ys * ux
    half = np.float32(0.025 * r)
    inside = (along > np.float32(0.965 * r)) & (np.abs(across) < half)
    return np.where(inside, np.float32(0.0), np.float32(1.0))


def sensor(rgb: np.ndarray, profile: CameraProfile, rng: np.random.Generator) -> np.ndarray:
    """Shot noise (grows with the signal) and read noise, per channel; uint8 in and out."""
    img = rgb.astype(np.float32)
    sigma = np.sqrt(np.float32(profile.read_noise**2) + np.float32(profile.shot_noise**2) * img)
    img += rng.standard_normal(img.shape, dtype=np.float32) * sigma
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def jpeg_roundtrip(rgb: np.ndarray, quality: int) -> np.ndarray:
    """The picture as the camera's JPEG export would decode (4:2:0 chroma, libjpeg)."""
    return decode_jpeg(encode_jpeg(rgb, quality))


def encode_jpeg(rgb: np.ndarray, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return bytes(buf.tobytes())


def decode_jpeg(data: bytes) -> np.ndarray:
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError("JPEG decoding failed")
    return np.ascontiguousarray(np.asarray(bgr)[..., ::-1])
