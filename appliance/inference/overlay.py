"""Heatmap overlays: the DR model's class-activation map over the photograph it looked at."""

from __future__ import annotations

import cv2
import numpy as np

from appliance.inference.preprocess import field_crop


def overlay(rgb: np.ndarray, cam: np.ndarray, size: int = 512, alpha: float = 0.45) -> np.ndarray:
    """RGB uint8 size×size: the field crop with the map (0-1) blended in where it is warm."""
    crop = field_crop(rgb, size)
    heat = cv2.resize(
        np.clip(cam, 0, 1).astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC
    )
    heat = np.clip(heat, 0, 1)
    coloured = cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET)[:, :, ::-1]
    weight = (alpha * np.clip((heat - 0.2) / 0.8, 0, 1))[:, :, None]
    blended = crop.astype(np.float32) * (1 - weight) + coloured.astype(np.float32) * weight
    return blended.astype(np.uint8)
