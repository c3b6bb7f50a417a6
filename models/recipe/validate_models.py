"""Validate the shipped models on the held-out synthetic test set and record it in the cards."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from appliance.inference import Screener, find_cards
from appliance.validate import run_validation


def _value(report: dict[str, Any], *keys: str) -> Any:
    node: Any = report
    for key in keys:
        if node is None:
            return None
        node = node.get(key)
    return node


def validate_shipped(
    test_dataset: Path, models_dir: Path, tasks: list[str] | None = None
) -> dict[str, Any]:
    """Run the harness on ``test_dataset`` with the INT8 models in ``models_dir``; write the
    report to ``models_dir/validation`` and its headline into the cards of ``tasks`` (all when
    None) — the cards of models not retrained keep the figures they were published with."""
    screener = Screener.load(models_dir, variant="int8")
    out = models_dir / "validation"
    info = {"models": screener.describe(), "variant": "int8"}
    report = run_validation(test_dataset, None, "synth", screener.predictor(), out, model_info=info)
    headline = {
        "dataset": "held-out synthetic test set, generator seed 3003",
        "n": report.get("n"),
        "referable_dr_sensitivity": _value(report, "referable_dr", "sensitivity"),
        "referable_dr_specificity": _value(report, "referable_dr", "specificity"),
        "referable_dr_auroc": _value(report, "referable_dr", "auroc"),
        "dme_auroc": _value(report, "dme", "auroc"),
        "dr_grade_kappa": _value(report, "dr_grade", "quadratic_weighted_kappa"),
        "gradability_auroc": _value(report, "gradability", "auroc"),
        "glaucoma_cdr_mae": _value(report, "glaucoma", "cdr_mae"),
        "glaucoma_auroc": _value(report, "glaucoma", "auroc"),
        "imageability": report.get("imageability"),
        "report": "models/validation/report.html",
    }
    for card in find_cards(models_dir):
        if tasks is not None and card.path.name.split(".")[0] not in tasks:
            continue
        data = json.loads(card.path.read_text(encoding="utf-8"))
        data["validation"] = headline
        card.path.write_text(
            json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
    print(json.dumps(headline, indent=2))
    return report
