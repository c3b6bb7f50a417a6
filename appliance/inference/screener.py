"""The screening models together: load by card (hash-checked), run per image.

``pre_process`` / ``post_process`` are pure (``preprocess.py``, ``postprocess.py``); only
``ModelSession.predict`` touches onnxruntime.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from appliance.inference.card import FUNDUS_TASKS, ModelCard, find_cards
from appliance.inference.domain import DomainReference, load
from appliance.inference.postprocess import POSTPROCESS, heatmap
from appliance.inference.preprocess import Field, find_field, prepare
from appliance.inference.runtime import ModelSession


class Screener:
    def __init__(
        self,
        sessions: dict[str, ModelSession],
        reference: DomainReference | None = None,
    ) -> None:
        self.sessions = sessions
        self.reference = reference  # the models' measured domain (domain.json), if any

    @classmethod
    def load(
        cls,
        models_dir: Path,
        variant: str = "int8",
        providers: list[Any] | None = None,
        threads: int = 2,
    ) -> Screener:
        """One model per fundus task; ModelIntegrityError when a file does not match its card; the
        domain reference beside them (ValueError when it is there but unreadable)."""
        sessions: dict[str, ModelSession] = {}
        for card in find_cards(Path(models_dir)):
            if card.task not in FUNDUS_TASKS:  # OCT models: appliance.inference.oct
                continue
            if card.task in sessions:
                raise ValueError(f"two models for task {card.task!r} in {models_dir}")
            chosen = variant if variant in card.variants() else card.variants()[0]
            sessions[card.task] = ModelSession(
                card, chosen, providers or ["CPUExecutionProvider"], threads
            )
        named = [p for p in (s.card.domain_path() for s in sessions.values()) if p is not None]
        return cls(sessions, load(named[0]) if named else None)

    @property
    def cards(self) -> list[ModelCard]:
        return [session.card for session in self.sessions.values()]

    @property
    def screening_available(self) -> bool:
        return "dr" in self.sessions or "glaucoma" in self.sessions

    def describe(self) -> list[dict[str, Any]]:
        return [
            {
                **s.card.summary(),
                "variant": s.variant,
                "sha256": s.card.data["files"][s.variant]["sha256"],
                "provider": s.providers_in_use[0],
                "fallback": s.fallback_reason,
            }
            for s in self.sessions.values()
        ]

    def analyse(self, rgb: np.ndarray, field: Field | None = None) -> dict[str, Any]:
        """Every installed model on one RGB image: flat findings + ``timings_ms`` + ``heatmap``."""
        findings: dict[str, Any] = {}
        timings: dict[str, float] = {}
        if field is None:  # found once per image, shared by every model's crop
            started = time.perf_counter()
            field = find_field(rgb)
            timings["field_ms"] = round((time.perf_counter() - started) * 1000, 2)
        for task, session in self.sessions.items():
            started = time.perf_counter()
            tensor = prepare(rgb, session.card.input, field)
            outputs = session.predict(tensor)
            findings.update(POSTPROCESS[task](outputs, session.card.thresholds))
            if task == "dr":
                findings["heatmap"] = heatmap(outputs)
            timings[f"{task}_ms"] = round((time.perf_counter() - started) * 1000, 2)
        started = time.perf_counter()
        if self.reference is None:
            findings["domain"] = {"distance": None, "threshold": None, "in_domain": False}
        else:
            findings["domain"] = self.reference.judge(rgb, field)
        timings["domain_ms"] = round((time.perf_counter() - started) * 1000, 2)
        findings["timings_ms"] = timings
        return findings

    def predictor(self) -> Any:
        """The validation harness's predictor: findings without the heatmap array."""

        def predict(rgb: np.ndarray) -> dict[str, Any]:
            result = self.analyse(rgb)
            result.pop("heatmap", None)
            result.pop("timings_ms", None)
            return result

        return predict
