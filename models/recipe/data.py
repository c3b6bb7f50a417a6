"""Training data: generator images → the appliance's own pre-processing → cached crops."""

from __future__ import annotations

import csv
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from appliance.inference.preprocess import disc_crop, field_crop, find_field

GEN_SIZE = (480, 640)  # (height, width) of generated photographs


def generate(out: Path, n: int, seed: int, workers: int) -> Path:
    """Write a labelled synthetic dataset (skipped when already complete)."""
    from appliance.synth.dataset import write_dataset

    labels = out / "labels.csv"
    if labels.exists() and sum(1 for _ in labels.open()) == n + 1:
        return out
    write_dataset(out, n=n, seed=seed, size=GEN_SIZE, workers=workers)
    return out


def read_rows(dataset: Path) -> list[dict[str, str]]:
    with (dataset / "labels.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def _crops(path: str, specs: dict[str, dict]) -> dict[str, np.ndarray]:
    with Image.open(path, formats=["JPEG", "PNG"]) as img:
        rgb = np.asarray(img.convert("RGB"))
    field = find_field(rgb)
    out = {}
    for task, spec in specs.items():
        if spec["crop"] == "field":
            out[task] = field_crop(rgb, spec["size"], field)
        else:
            out[task] = disc_crop(rgb, spec["size"], spec["disc_extent"], field)
    return out


def crops(dataset: Path, specs: dict[str, dict], workers: int) -> dict[str, np.ndarray]:
    """uint8 N×H×W×3 arrays per task, cached next to the dataset."""
    cache = dataset / "crops.npz"
    if cache.exists():
        with np.load(cache) as stored:
            if all(task in stored for task in specs):
                return {task: stored[task] for task in specs}
    rows = read_rows(dataset)
    paths = [str(dataset / row["image"]) for row in rows]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(_crops, paths, [specs] * len(paths), chunksize=16))
    arrays = {task: np.stack([r[task] for r in results]) for task in specs}
    np.savez(cache, **arrays)
    return arrays


def labels(rows: list[dict[str, str]]) -> dict[str, np.ndarray]:
    def col(name: str, kind: type = int) -> np.ndarray:
        return np.array([kind(row[name]) for row in rows])

    quality = np.array([{"good": 0, "usable": 1, "reject": 2}[row["quality"]] for row in rows])
    return {
        "quality": quality,
        "gradable": col("gradable"),
        "dr_grade": col("dr_grade"),
        "referable_dr": col("referable_dr"),
        "dme": col("dme"),
        "cdr": col("cdr", float),
        "glaucoma_suspect": col("glaucoma_suspect"),
    }
