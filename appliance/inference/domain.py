"""The out-of-domain guard: how far a photograph is from what the models were validated on.

The screening models were trained and validated on one kind of picture. On a picture unlike
those, their outputs are guesses, however confident they look. This module measures, per
image, a distance from the validation data and says whether the image is inside the domain:

- :func:`features` describes the models' view of the image (the same field crop they get):
  colour balance, colour spread, detail at two scales, vignetting, clipping and the shape of
  the green histogram — fourteen numbers, cheap to compute (about a millisecond);
- a :class:`DomainReference` holds their mean and (shrunk) covariance over held-out images the
  quality gate passed, and a threshold on the Mahalanobis distance: the ``quantile`` of the
  held-out distances (99 % by default), so about 1 % of in-domain photographs go to a person;
- :meth:`DomainReference.judge` gives ``{"distance", "threshold", "in_domain"}``.

The reference is built per model set and shipped beside the models (``domain.json``), with
``python -m appliance.tools.domain_reference --out models/domain.json`` (the generator's validation
split by default, or a site's own gradable photographs with ``--images DIR``), and named with
its SHA-256 in the DR model's card (``"domain": {"path", "sha256"}``), so it is hash-checked
like a model file. A model set whose cards name none has no measured domain: every image is
then out of domain, and says so.

What it cannot do: it sees image statistics, not disease. A photograph whose statistics match
the validation data but whose content does not (a lesion type never seen in training) passes.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from appliance.inference.preprocess import Field, field_crop, find_field

LOGGER = logging.getLogger(__name__)

SCHEMA = "appliance.domain/1"
FILENAME = "domain.json"
CROP = 128  # side of the field crop the features are read from
FEATURES = (
    "mean_red",
    "mean_green",
    "mean_blue",
    "sd_red",
    "sd_green",
    "sd_blue",
    "red_green_correlation",
    "fine_detail",
    "mid_detail",
    "vignetting",
    "green_skew",
    "dark_fraction",
    "red_clipped",
    "green_entropy",
)
SHRINKAGE = 0.1  # covariance shrunk towards its diagonal, so a few hundred images suffice


def _radius(size: int) -> np.ndarray:
    """Distance of each pixel of a size x size crop from its centre, in half-sides."""
    c = (size - 1) / 2.0
    yy, xx = np.mgrid[0:size, 0:size]
    return np.asarray(np.hypot(xx - c, yy - c) / (size / 2.0))


_RADIUS = _radius(CROP)
_MASK = _RADIUS <= 0.9


def features(rgb: np.ndarray, field: Field | None = None) -> np.ndarray:
    """The fourteen numbers of :data:`FEATURES` for one RGB uint8 photograph."""
    crop = field_crop(rgb, CROP, field or find_field(rgb)).astype(np.float32) / 255.0
    r, g, b = (crop[..., i][_MASK] for i in range(3))
    green = crop[..., 1]
    sd_g = float(g.std()) + 1e-4
    fine = (green - cv2.GaussianBlur(green, (0, 0), 1.0))[_MASK]
    mid = (cv2.GaussianBlur(green, (0, 0), 1.0) - cv2.GaussianBlur(green, (0, 0), 4.0))[_MASK]
    inner = green[_RADIUS <= 0.5]
    outer = green[(_RADIUS >= 0.6) & (_RADIUS <= 0.9)]
    corr = float(np.corrcoef(r, g)[0, 1]) if r.std() > 1e-4 and g.std() > 1e-4 else 0.0
    centred = g - g.mean()
    skew = float(np.mean(centred**3) / sd_g**3)
    hist = np.histogram(g, bins=32, range=(0.0, 1.0))[0].astype(np.float64)
    p = hist[hist > 0] / hist.sum()
    values = [
        float(r.mean()),
        float(g.mean()),
        float(b.mean()),
        float(r.std()),
        float(g.std()),
        float(b.std()),
        corr,
        float(fine.std()) / sd_g,
        float(mid.std()) / sd_g,
        float(outer.mean()) / max(float(inner.mean()), 1e-3),
        max(-10.0, min(10.0, skew)),
        float(np.mean(g < 0.05)),
        float(np.mean(r > 0.98)),
        float(-(p * np.log2(p)).sum()),
    ]
    return np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)


@dataclass(frozen=True)
class DomainReference:
    mean: np.ndarray
    precision: np.ndarray  # inverse of the shrunk covariance
    threshold: float
    n: int
    source: str
    quantile: float

    def distance(self, values: np.ndarray) -> float:
        delta = values - self.mean
        return float(math.sqrt(max(0.0, float(delta @ self.precision @ delta))))

    def judge(self, rgb: np.ndarray, field: Field | None = None) -> dict[str, Any]:
        d = self.distance(features(rgb, field))
        return {
            "distance": round(d, 3),
            "threshold": round(self.threshold, 3),
            "in_domain": d <= self.threshold,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "features": list(FEATURES),
            "mean": [float(v) for v in self.mean],
            "precision": [[float(v) for v in row] for row in self.precision],
            "threshold": float(self.threshold),
            "quantile": self.quantile,
            "n": self.n,
            "source": self.source,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DomainReference:
        if data.get("schema") != SCHEMA or list(data.get("features", [])) != list(FEATURES):
            raise ValueError(f"not a {SCHEMA} reference with features {', '.join(FEATURES)}")
        mean = np.asarray(data["mean"], dtype=np.float64)
        precision = np.asarray(data["precision"], dtype=np.float64)
        k = len(FEATURES)
        if mean.shape != (k,) or precision.shape != (k, k) or not np.isfinite(precision).all():
            raise ValueError("the reference's mean or precision has the wrong shape")
        threshold = float(data["threshold"])
        if not (math.isfinite(threshold) and threshold > 0):
            raise ValueError("the reference's threshold must be a positive number")
        return cls(
            mean,
            precision,
            threshold,
            int(data["n"]),
            str(data["source"]),
            float(data["quantile"]),
        )


def load(path: Path) -> DomainReference:
    """The reference in ``path`` (a model card names it, with its SHA-256). ValueError when it
    cannot be read: a guard that cannot be read must not be skipped silently."""
    try:
        return DomainReference.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a usable domain reference: {exc}") from exc


def fit(rows: Sequence[np.ndarray], source: str, quantile: float = 0.99) -> DomainReference:
    """A reference from the features of held-out in-domain photographs."""
    data = np.vstack(rows)
    if len(data) < 4 * len(FEATURES):
        raise ValueError(f"need at least {4 * len(FEATURES)} photographs, got {len(data)}")
    mean = data.mean(axis=0)
    cov = np.cov(data, rowvar=False)
    shrunk = (1.0 - SHRINKAGE) * cov + SHRINKAGE * np.diag(np.diag(cov))
    shrunk += np.eye(len(FEATURES)) * 1e-9
    precision = np.linalg.inv(shrunk)
    ref = DomainReference(mean, precision, 0.0, len(data), source, quantile)
    distances = [ref.distance(row) for row in data]
    threshold = float(np.quantile(distances, quantile))
    return DomainReference(mean, precision, threshold, len(data), source, quantile)
