"""Training data: generator images → the appliance's own pre-processing → cached crops."""

from __future__ import annotations

import csv
import dataclasses
import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from appliance.inference.preprocess import find_field, model_crop

# Generated photographs keep each camera profile's frame shape (whole circles, circles cut by a
# wide sensor, rectangular crops, a square legacy frame); their longer side is drawn between
# MAX_SIDE/2 and MAX_SIDE, so the models see the resampling of small and large cameras alike.
MAX_SIDE = 1152
GENERATOR = {"size": "camera frame", "max_side": MAX_SIDE, "look": "appliance.synth.look"}
# Defect kinds in the order of the gradability model's auxiliary defect head ("none" first).
DEFECT_KINDS = (
    "none",
    "out_of_focus",
    "too_dark",
    "too_bright",
    "low_contrast",
    "uneven_illumination",
    "off_center",
)


def generate(out: Path, n: int, seed: int, workers: int) -> Path:
    """Write a labelled synthetic dataset (skipped when already complete)."""
    from appliance.synth.dataset import write_dataset

    if _complete(out, n, seed):
        return out
    write_dataset(out, n=n, seed=seed, size=None, workers=workers, max_side=MAX_SIDE)
    _stamp(out, n, seed)
    return out


def _complete(out: Path, n: int, seed: int) -> bool:
    """A dataset made earlier with these generator settings (else it is made again)."""
    stamp, labels = out / "generator.json", out / "labels.csv"
    if not (stamp.exists() and labels.exists()):
        return False
    if json.loads(stamp.read_text()) != {**GENERATOR, "n": n, "seed": seed}:
        return False
    return sum(1 for _ in labels.open()) == n + 1


def _stamp(out: Path, n: int, seed: int) -> None:
    for cache in out.glob("crops-*.npy"):
        cache.unlink()  # crops of an earlier dataset in this folder
    (out / "generator.json").write_text(json.dumps({**GENERATOR, "n": n, "seed": seed}))


def _defect_case(seed: int, index: int):
    """A case from the generator's own mix with its acquisition defect forced.

    Everything but the defect comes from ``draw_case``; the defect kind is uniform over the six
    kinds and its strength is drawn as ``draw_case`` draws it (a good/usable/reject band from the
    generator's defect mix, uniform inside the band), so its label follows the same rule
    (``quality_of``) as every other generated image.
    """
    from appliance.synth.case import PREVALENCE, _pick, draw_case
    from appliance.synth.gradability import DEFECTS, strength_band

    rng = np.random.default_rng([seed, index])
    case = draw_case(rng, None, MAX_SIDE)
    defect = str(rng.choice(DEFECTS))
    low, high = strength_band(defect, _pick(rng, PREVALENCE["defect_quality"]))
    strength = round(float(rng.uniform(low, high - 0.001)), 3)
    return dataclasses.replace(case, defect=defect, defect_strength=strength)


def _write_defect_image(job: tuple[Path, int, int]) -> dict[str, str]:
    from appliance.synth.case import render_layers
    from appliance.synth.dataset import image_name, label_row

    out, seed, index = job
    case = _defect_case(seed, index)
    name = image_name(index)
    if not (out / name).exists():  # rendered by an interrupted earlier run (written atomically)
        part = out / f"{name}.part"
        part.write_bytes(render_layers(case).jpeg)
        part.replace(out / name)
    return {**label_row(case, name), "defect_strength": f"{case.defect_strength:.3f}"}


def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)


def generate_defects(out: Path, n: int, seed: int, workers: int) -> Path:
    """A gradability-only training supplement: ``n`` generator images, each with a defect.

    In the generator's own mix only a quarter of the images carry a defect, so 4,000 training
    images hold only ~75 ``reject`` examples of each defect kind; this set adds more of them.
    Same renderer, same image size, same labelling rule; skipped when already complete.
    """
    from appliance.synth.dataset import COLUMNS

    labels = out / "labels.csv"
    if _complete(out, n, seed):
        return out
    (out / "images").mkdir(parents=True, exist_ok=True)
    jobs = [(out, seed, i) for i in range(n)]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker) as pool:
        rows = list(pool.map(_write_defect_image, jobs, chunksize=max(1, n // (8 * workers))))
    with labels.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(
            handle, fieldnames=[*COLUMNS, "defect_strength"], lineterminator="\n"
        )
        writer.writeheader()
        writer.writerows(rows)
    _stamp(out, n, seed)
    return out


def read_rows(dataset: Path) -> list[dict[str, str]]:
    with (dataset / "labels.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def _crops(path: str, specs: dict[str, dict]) -> dict[str, np.ndarray]:
    with Image.open(path, formats=["JPEG", "PNG"]) as img:
        rgb = np.asarray(img.convert("RGB"))
    field = find_field(rgb)
    return {task: model_crop(rgb, spec, field) for task, spec in specs.items()}


def _cache_name(task: str, spec: dict) -> str:
    extent = f"-{spec['disc_extent']}" if spec["crop"] == "disc" else ""
    colour = f"-{spec['colour']}" if spec.get("colour", "none") != "none" else ""
    return f"crops-{task}-{spec['crop']}{extent}-{spec['size']}{colour}.npy"


def crops(dataset: Path, specs: dict[str, dict], workers: int) -> dict[str, np.ndarray]:
    """uint8 N×H×W×3 arrays per task, cached next to the dataset (one file per task and input
    spec, so a changed crop size is never served from a stale cache)."""
    out: dict[str, np.ndarray] = {}
    for task, spec in specs.items():
        if (dataset / _cache_name(task, spec)).exists():
            out[task] = np.load(dataset / _cache_name(task, spec))
    missing = {task: spec for task, spec in specs.items() if task not in out}
    if not missing:
        return out
    rows = read_rows(dataset)
    paths = [str(dataset / row["image"]) for row in rows]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(_crops, paths, [missing] * len(paths), chunksize=16))
    for task, spec in missing.items():
        out[task] = np.stack([r[task] for r in results])
        np.save(dataset / _cache_name(task, spec), out[task])
    return {task: out[task] for task in specs}


def strengths(rows: list[dict[str, str]], seed: int) -> np.ndarray:
    """Nominal defect strength of each row: its own column, else redrawn from the dataset seed
    (``case_for`` only samples the case's parameters; nothing is rendered)."""
    from appliance.synth.dataset import case_for

    if rows and "defect_strength" in rows[0]:
        return np.array([float(row["defect_strength"]) for row in rows])
    values = []
    for index, row in enumerate(rows):
        case = case_for(seed, index, None, MAX_SIDE)
        if row["image"] != f"images/{index:06d}.jpg" or (case.defect or "none") != row["defect"]:
            raise RuntimeError(f"{row['image']} does not match case {index} of seed {seed}")
        values.append(case.defect_strength)
    return np.array(values)


def labels(rows: list[dict[str, str]]) -> dict[str, np.ndarray]:
    def col(name: str, kind: type = int) -> np.ndarray:
        return np.array([kind(row[name]) for row in rows])

    quality = np.array([{"good": 0, "usable": 1, "reject": 2}[row["quality"]] for row in rows])
    return {
        "defect": np.array([DEFECT_KINDS.index(row["defect"]) for row in rows]),
        "quality": quality,
        "gradable": col("gradable"),
        "dr_grade": col("dr_grade"),
        "referable_dr": col("referable_dr"),
        "dme": col("dme"),
        "cdr": col("cdr", float),
        "glaucoma_suspect": col("glaucoma_suspect"),
    }


def severity(defect: np.ndarray, strength: np.ndarray) -> np.ndarray:
    """Defect strength relative to its kind's reject level (0 without a defect, capped at 2):
    >= 1 is exactly the ``reject`` label, so this is the label's rule made continuous."""
    from appliance.synth.gradability import DEFECT_LEVELS

    reject = np.array([1.0] + [DEFECT_LEVELS[kind].reject for kind in DEFECT_KINDS[1:]])
    ratio = np.where(defect == 0, 0.0, strength / reject[defect])
    return np.clip(ratio, 0.0, 2.0).astype(np.float32)
