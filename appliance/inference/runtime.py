"""onnxruntime sessions: the only code that touches a session.

Provider preference (TensorRT → CUDA → CPU by default) is filtered by what this onnxruntime
build offers, and the provider actually used is read back from the session.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from appliance.inference.card import ModelCard

LOGGER = logging.getLogger(__name__)
DEFAULT_PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def choose_providers(
    preference: tuple[str, ...] = DEFAULT_PREFERENCE,
    trt_cache: Path | None = None,
    trt_fp16: bool = True,
) -> list[Any]:
    available = set(ort.get_available_providers())
    chosen: list[Any] = []
    for name in preference:
        if name not in available:
            continue
        if name == "TensorrtExecutionProvider" and trt_cache is not None:
            trt_cache.mkdir(parents=True, exist_ok=True)
            options = {
                "trt_engine_cache_enable": True,
                "trt_engine_cache_path": str(trt_cache),
                "trt_fp16_enable": trt_fp16,
            }
            chosen.append((name, options))
        else:
            chosen.append(name)
    if not any((p if isinstance(p, str) else p[0]) == "CPUExecutionProvider" for p in chosen):
        chosen.append("CPUExecutionProvider")
    return chosen


class ModelSession:
    def __init__(
        self, card: ModelCard, variant: str, providers: list[Any], threads: int = 2
    ) -> None:
        self.path = card.verify(variant)
        self.card = card
        self.variant = variant
        self.threads = threads
        self.fallback_reason: str | None = None
        self._open(providers)
        self.warm_up()
        LOGGER.info("model %s %s on %s", card.name, variant, self.providers_in_use[0])

    def warm_up(self) -> None:
        """One inference at start-up, so the first patient does not pay for lazy initialisation."""
        size = int(self.card.input["size"])
        channels = int(self.card.input.get("channels", 3))
        self.predict(np.zeros((1, channels, size, size), np.float32))

    def _open(self, providers: list[Any]) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(self.path), options, providers=providers)
        self.providers_in_use: list[str] = list(self.session.get_providers())
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [output.name for output in self.session.get_outputs()]

    def predict(self, tensor: np.ndarray) -> dict[str, np.ndarray]:
        try:
            values = self.session.run(None, {self.input_name: tensor})
        except Exception as exc:
            if self.providers_in_use[0] == "CPUExecutionProvider":
                raise
            # An accelerator failing at run time: carry on on the CPU, and say so.
            self.fallback_reason = f"{self.providers_in_use[0]} failed: {type(exc).__name__}"
            LOGGER.error(
                "model %s: %s; falling back to the CPU", self.card.name, self.fallback_reason
            )
            self._open(["CPUExecutionProvider"])
            values = self.session.run(None, {self.input_name: tensor})
        return dict(zip(self.output_names, values, strict=True))
