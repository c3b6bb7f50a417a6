"""Run a predictor over a labelled data set and write the report folder.

``out/`` receives ``report.json``, ``report.html``, ``predictions.csv`` (one line per image:
what the model said, for re-analysis) and the plots ``roc_referable_dr.png``,
``roc_gradability.png``, ``roc_glaucoma.png``, ``roc_dme.png`` and
``calibration_referable_dr.png``, each only when the report has what it needs.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import tempfile
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from appliance.validate.labels import default_labels, read_labels
from appliance.validate.page import render
from appliance.validate.plots import calibration_png, roc_png
from appliance.validate.predictions import PREDICTION_KEYS, Predictor, check_prediction
from appliance.validate.report import compute_report

LOGGER = logging.getLogger(__name__)

RASTER_FORMATS = ["JPEG", "PNG", "TIFF"]
Progress = Callable[[int, int, str], None]  # (done, total, image)
_ROCS = {  # block → (file, title, positive class)
    "referable_dr": ("roc_referable_dr.png", "Referable diabetic retinopathy", "referable DR"),
    "dme": ("roc_dme.png", "Diabetic macular oedema", "DME"),
    "glaucoma": ("roc_glaucoma.png", "Glaucoma suspect", "glaucoma suspect"),
    "gradability": ("roc_gradability.png", "Ungradable image detection", "ungradable"),
}


def load_rgb(path: Path) -> np.ndarray:
    """JPEG, PNG or TIFF (nothing else) as an RGB uint8 array; 16-bit images scaled to 8."""
    with Image.open(path, formats=RASTER_FORMATS) as img:
        img.load()
        if img.mode in ("I;16", "I;16B", "I;16L", "I"):
            array = np.asarray(img, dtype=np.float64)
            scale = 257.0 if array.max() > 255 else 1.0
            grey = np.clip(array / scale, 0, 255).astype(np.uint8)
            return np.repeat(grey[:, :, None], 3, axis=2)
        return np.asarray(img.convert("RGB"), dtype=np.uint8)


def atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _plots(report: Mapping[str, Any], out: Path) -> list[str]:
    written: list[str] = []
    for key, (name, title, positive) in _ROCS.items():
        block = report.get(key)
        if not block or not block.get("roc"):
            continue
        sens, spec = block["sensitivity"]["value"], block["specificity"]["value"]
        point = (1.0 - spec, sens) if sens is not None and spec is not None else None
        roc_png(
            out / name,
            title=f"ROC: {title}",
            roc=block["roc"],
            auroc=block["auroc"],
            operating_point=point,
            positive=positive,
        )
        written.append(name)
    calibration = report.get("calibration")
    if calibration:
        name = "calibration_referable_dr.png"
        calibration_png(
            out / name,
            title="Calibration: p_referable",
            bins=calibration["bins"],
            ece=calibration["ece"],
            n=calibration["n"],
        )
        written.append(name)
    return written


def write_report(
    report: dict[str, Any], out: Path, *, title: str, model_info: dict[str, Any]
) -> None:
    """Write ``report.json`` (report + ``title``, ``model``, ``generated_at``, ``figures``),
    the plots and ``report.html`` into ``out`` (created when missing)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    figures = _plots(report, out)
    document = {
        **report,
        "title": title,
        "model": model_info,
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "figures": figures,
    }
    text = json.dumps(document, indent=2, allow_nan=False, default=str)
    atomic_write(out / "report.json", text.encode() + b"\n")
    atomic_write(out / "report.html", render(json.loads(text), figures).encode())
    LOGGER.info("wrote the validation report to %s", out)


def _predictions_csv(images: list[str], preds: list[dict[str, float]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["image", *PREDICTION_KEYS])
    for image, pred in zip(images, preds, strict=True):
        values = [pred[k] for k in PREDICTION_KEYS]
        writer.writerow([image, *("" if np.isnan(v) else f"{v:g}" for v in values)])
    return buffer.getvalue().encode()


def _model_name(model_info: Mapping[str, Any]) -> str:
    if model_info.get("name"):
        return str(model_info["name"])
    models = model_info.get("models")
    if isinstance(models, list):
        names = [str(m["name"]) for m in models if isinstance(m, Mapping) and m.get("name")]
        if names:
            return " + ".join(names)
    return "the model"


def run_validation(
    dataset_dir: Path,
    labels: Path | None,
    fmt: str,
    predictor: Predictor,
    out: Path,
    *,
    model_info: dict[str, Any],
    load_image: Callable[[Path], np.ndarray] | None = None,
    progress: Progress | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Read the labels, run ``predictor`` on every image, compute and write the report.

    An image that cannot be read is listed in ``report["unreadable"]`` and left out; a
    predictor that fails or answers out of range stops the run with an error naming the image
    (a silent skip would flatter the model).
    """
    dataset_dir = Path(dataset_dir)
    loader = load_image if load_image is not None else load_rgb
    rows = read_labels(dataset_dir, labels, fmt)
    kept, preds, checked, unreadable = [], [], [], []
    for i, row in enumerate(rows, start=1):
        path = Path(row.image) if Path(row.image).is_absolute() else dataset_dir / row.image
        try:
            rgb = loader(path)
            if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
                raise ValueError(f"loader returned {rgb.dtype} {rgb.shape}, not RGB uint8")
        except Exception as exc:  # any unreadable file is reported, never fatal
            LOGGER.warning("cannot read %s: %s", path, exc)
            unreadable.append({"image": row.image, "reason": f"{type(exc).__name__}: {exc}"})
        else:
            try:
                pred = predictor(rgb)
            except Exception as exc:
                raise RuntimeError(f"the predictor failed on {row.image}: {exc}") from exc
            checked.append(check_prediction(pred, row.image))
            preds.append(pred)
            kept.append(row)
        if progress is not None:
            progress(i, len(rows), row.image)
    report = compute_report(kept, preds, n_bootstrap=n_bootstrap, seed=seed)
    report["unreadable"] = {"count": len(unreadable), "images": unreadable}
    report["dataset"] = {
        "format": fmt,
        "dir": str(dataset_dir),
        "labels": str(labels if labels is not None else default_labels(dataset_dir, fmt)),
        "n_rows": len(rows),
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    images = [row.image for row in kept]
    atomic_write(out / "predictions.csv", _predictions_csv(images, checked))
    title = f"Validation of {_model_name(model_info)} on {dataset_dir.name or dataset_dir} ({fmt})"
    write_report(report, out, title=title, model_info=model_info)
    return report
