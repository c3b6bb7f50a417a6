"""``appliance screen``: files on disk analysed as one patient's visit, nothing stored."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2

from appliance.capture.decode import OPT_SOP_CLASS, Limits, examine
from appliance.capture.ingest import patient_from_fields
from appliance.errors import ApplianceError
from appliance.outcome import RuleSet
from appliance.pipeline.image import ScreenerLike, analyse, finding, image_json
from appliance.pipeline.oct import FluidDetector, analyse_oct, oct_json
from appliance.pipeline.visit import outcome_json, visit_outcome
from appliance.quality import QualityThresholds


def _given_laterality(path: Path, data: bytes, limits: Limits) -> tuple[str | None, str | None]:
    """Laterality as the file's DICOM header or a sidecar ``NAME.json`` states it."""
    found = examine(data, limits)
    if found.patient is not None:
        return found.laterality, "dicom" if found.laterality else None
    sidecar = path.with_suffix(".json")
    if sidecar.is_file():
        _, side = patient_from_fields(json.loads(sidecar.read_text(encoding="utf-8")))
        return side, "sidecar" if side else None
    return None, None


def screen_files(
    paths: list[Path],
    limits: Limits,
    thresholds: QualityThresholds,
    rules: RuleSet,
    screener: ScreenerLike | None,
    heatmap_dir: Path | None = None,
    oct_fluid: FluidDetector | None = None,  # the installed oct-fluid model, as the worker's
) -> dict[str, Any]:
    images: list[dict[str, Any]] = []
    findings = []
    octs = []
    for index, path in enumerate(paths):
        entry: dict[str, Any] = {"path": str(path)}
        try:
            data = path.read_bytes()
            if examine(data, limits).sop_class_uid == OPT_SOP_CLASS:  # an OCT volume
                scan = analyse_oct(data, limits, None, oct_fluid)
                entry.update(oct_json(scan, {}))
                if scan.finding is not None:
                    octs.append(scan.finding)
                images.append(entry)
                continue
            given, source = _given_laterality(path, data, limits)
            analysis = analyse(data, limits, thresholds, screener=screener)
        except OSError as exc:
            entry.update(error="unreadable_file", message=exc.strerror or str(exc))
        except (ApplianceError, ValueError) as exc:
            reason = getattr(exc, "reason", "bad_sidecar")
            entry.update(error=reason, message=getattr(exc, "message", str(exc)))
        else:
            entry.update(image_json(analysis, given, source))
            entry["heatmap"] = None
            if heatmap_dir is not None and analysis.heatmap is not None:
                heatmap_dir.mkdir(parents=True, exist_ok=True)
                target = heatmap_dir / f"{index:03d}-{path.stem}.heatmap.png"
                cv2.imwrite(str(target), cv2.cvtColor(analysis.heatmap, cv2.COLOR_RGB2BGR))
                entry["heatmap"] = str(target)
            findings.append(finding(analysis, None, given))
        images.append(entry)
    installed = screener is not None and screener.screening_available
    outcome = visit_outcome(findings, rules, installed, octs)
    return {"images": images, "visit": {"outcome": outcome_json(outcome)}}
