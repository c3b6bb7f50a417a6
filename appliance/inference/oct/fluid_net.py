"""Fluid by a small segmentation network (optional; task ``oct-fluid``), beside the classical
detector of :mod:`appliance.inference.oct.fluid`.

Three parts, like the fundus screener: :func:`pre_process` (pure numpy: each B-scan scaled
between its own 10th and 99.5th percentiles and padded to a multiple of :data:`STRIDE`),
:meth:`FluidNet.predict` (the only onnxruntime call, through
:class:`appliance.inference.runtime.ModelSession`) and :func:`post_process` (pure numpy: the
fluid probability map thresholded, kept between the ILM and the RPE the classical
segmentation found, components under :data:`MIN_AREA_UM2` dropped, and scored exactly like the
classical detector: ``1 - exp(-area / AREA_SCALE_MM2)`` of the en-face fluid area within
0.5 mm of the fovea, and over the whole scan). The network was trained on the synthetic OCT
generator only (models/recipe/oct.py): demonstration, not clinically validated.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from appliance.inference.card import ModelCard, ModelIntegrityError, find_cards
from appliance.inference.oct.fluid import (
    MIN_AREA_UM2,
    FluidResult,
    fluid_result,
    large_components,
)
from appliance.inference.runtime import ModelSession

LOGGER = logging.getLogger(__name__)

TASK = "oct-fluid"
STRIDE = 8  # the network downsamples three times
PERCENTILES = (10.0, 99.5)


def normalise_bscan(frame: np.ndarray) -> np.ndarray:
    """One B-scan (rows, A-scans) scaled so its 10th percentile is 0 and its 99.5th is 1."""
    img = np.asarray(frame, dtype=np.float32)
    lo, hi = np.percentile(img, PERCENTILES)
    return np.clip((img - lo) / max(float(hi - lo), 1.0), -0.5, 2.0).astype(np.float32)


def pre_process(volume: np.ndarray) -> np.ndarray:
    """(frames, rows, A-scans) → float32 (frames, 1, rows', A-scans'), rows' and A-scans'
    padded (edge values) up to a multiple of :data:`STRIDE`."""
    if volume.ndim != 3:
        raise ValueError(f"expected a (frames, rows, A-scans) volume, got shape {volume.shape}")
    f, rows, ascans = volume.shape
    pad_r, pad_a = (-rows) % STRIDE, (-ascans) % STRIDE
    out = np.empty((f, 1, rows + pad_r, ascans + pad_a), dtype=np.float32)
    for i in range(f):
        out[i, 0] = np.pad(normalise_bscan(volume[i]), ((0, pad_r), (0, pad_a)), mode="edge")
    return out


def post_process(
    probability: np.ndarray,
    ilm_px: np.ndarray,
    rpe_px: np.ndarray,
    spacing_mm: tuple[float, float, float],
    fovea_mm: tuple[float, float],
    threshold: float = 0.5,
) -> FluidResult:
    """The fluid mask and scores from the network's probability map (frames, rows, A-scans),
    cropped back to the volume's shape; B-scans without boundaries (blank) get no fluid."""
    _, axial_mm, lateral_mm = spacing_mm
    f_total, rows, _ = probability.shape
    r = np.arange(rows, dtype=np.float64)[:, None]
    min_px = MIN_AREA_UM2 / (axial_mm * 1000.0 * lateral_mm * 1000.0)
    mask = np.zeros(probability.shape, dtype=bool)
    for f in range(f_total):
        ilm, rpe = ilm_px[f], rpe_px[f]
        if not (np.isfinite(ilm).all() and np.isfinite(rpe).all()):
            continue
        inside = (r >= ilm[None, :]) & (r < rpe[None, :])
        found = (inside & (probability[f] >= threshold)).astype(np.uint8)
        mask[f] = large_components(found, min_px)
    return fluid_result(mask, spacing_mm, fovea_mm)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-np.clip(x, -30.0, 30.0))), dtype=np.float32)


def temperature(card: ModelCard) -> float:
    calibration = card.data.get("calibration") or {}
    return float(calibration.get("temperature", 1.0)) if isinstance(calibration, dict) else 0.0


def check_card(card: ModelCard) -> None:
    """What this code needs of an ``oct-fluid`` card beyond the common fields; a card that
    lacks it is refused (ModelIntegrityError) rather than run on guesses."""
    problems = []
    if card.task != TASK:
        problems.append(f"task {card.task!r} is not {TASK!r}")
    if "fluid_logit" not in card.data["outputs"]:
        problems.append("no output 'fluid_logit'")
    try:
        pixel = float(card.thresholds.get("pixel", 0.5))
        t = temperature(card)
    except (TypeError, ValueError, KeyError) as exc:
        problems.append(f"unreadable threshold or calibration ({exc})")
    else:
        if not 0.0 < pixel < 1.0:
            problems.append(f"pixel threshold {pixel} is not between 0 and 1")
        if not 0.0 < t < 100.0:
            problems.append(f"calibration temperature {t} is not positive")
    if problems:
        raise ModelIntegrityError(f"model card {card.path.name}: {'; '.join(problems)}")


class FluidNet:
    """The installed ``oct-fluid`` model (hash-checked through its card)."""

    def __init__(self, session: ModelSession, batch: int = 8) -> None:
        self.session = session
        self.batch = batch
        check_card(session.card)

    @property
    def card(self) -> ModelCard:
        return self.session.card

    @property
    def temperature(self) -> float:
        """The card's calibration (``calibration.temperature``; 1 when it has none): the
        probability is ``sigmoid(logit / T)``, the scale the pixel threshold was chosen on."""
        return temperature(self.card)

    @property
    def method(self) -> str:
        """The record's words for it: name, version, variant and the file's hash prefix."""
        card = self.card
        sha = str(card.data["files"][self.session.variant]["sha256"])[:12]
        return f"model {card.name} {card.version} ({self.session.variant}, sha256 {sha})"

    def describe(self) -> dict[str, Any]:
        """As :meth:`appliance.inference.screener.Screener.describe` lists each model."""
        session = self.session
        return {
            **self.card.summary(),
            "variant": session.variant,
            "sha256": self.card.data["files"][session.variant]["sha256"],
            "provider": session.providers_in_use[0],
            "fallback": session.fallback_reason,
        }

    @classmethod
    def find(
        cls,
        models_dir: Path,
        variant: str = "int8",
        providers: list[Any] | None = None,
        threads: int = 2,
    ) -> FluidNet | None:
        """The ``oct-fluid`` model in ``models_dir``, or None when none is installed;
        ModelIntegrityError when its file does not match its card."""
        for card in find_cards(Path(models_dir)):
            if card.task == TASK:
                check_card(card)
                chosen = variant if variant in card.variants() else card.variants()[0]
                providers = providers or ["CPUExecutionProvider"]
                return cls(ModelSession(card, chosen, providers, threads))
        return None

    def predict(self, volume: np.ndarray) -> np.ndarray:
        """Fluid probability (frames, rows, A-scans) of ``volume``, calibrated."""
        temperature = self.temperature
        tensor = pre_process(volume)
        out = np.empty((tensor.shape[0], tensor.shape[2], tensor.shape[3]), dtype=np.float32)
        for start in range(0, tensor.shape[0], self.batch):
            logits = self.session.predict(tensor[start : start + self.batch])["fluid_logit"]
            out[start : start + self.batch] = sigmoid(logits[:, 0] / temperature)
        return out[:, : volume.shape[1], : volume.shape[2]]

    def detect(
        self,
        volume: np.ndarray,
        ilm_px: np.ndarray,
        rpe_px: np.ndarray,
        spacing_mm: tuple[float, float, float],
        fovea_mm: tuple[float, float],
    ) -> FluidResult:
        threshold = float(self.card.thresholds.get("pixel", 0.5))
        return post_process(self.predict(volume), ilm_px, rpe_px, spacing_mm, fovea_mm, threshold)
