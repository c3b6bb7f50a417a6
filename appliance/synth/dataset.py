"""Write a labelled synthetic dataset: ``images/NNNNNN.jpg`` and ``labels.csv``.

Image ``i`` of a dataset with seed ``S`` is the case :func:`case_for` (S, i) draws, so it
depends on nothing else: datasets can be made in parallel chunks or by several workers and
come out byte-identical. Each JPEG is the camera profile's own export of the picture (its
quality, 4:2:0 chroma), so decoding it gives exactly :func:`appliance.synth.case.render_case`.

The command line (``appliance synth --out DIR --n N --seed S [--size WxH] [--workers K]``) is
:func:`add_arguments` plus :func:`run`; :func:`main` runs it stand-alone.
"""

from __future__ import annotations

import argparse
import csv
import logging
import multiprocessing
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from appliance.synth.case import Case, draw_case, render_layers

LOGGER = logging.getLogger(__name__)

COLUMNS = (
    "image",
    "eye",
    "field",
    "dr_grade",
    "referable_dr",
    "dme",
    "cdr",
    "glaucoma_suspect",
    "notch",
    "gradable",
    "quality",
    "defect",
    "camera",
    "pigmentation",
    "age_band",
    "sex",
    "seed",
)


def case_for(
    seed: int, index: int, size: tuple[int, int] | None = None, max_side: int | None = None
) -> Case:
    """The case of image ``index`` in the dataset with ``seed``; ``size`` is (height, width),
    ``max_side`` scales cameras' own frames (see :func:`appliance.synth.case.draw_case`)."""
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be >= 0, got {seed}, {index}")
    return draw_case(np.random.default_rng([seed, index]), size, max_side)


def image_name(index: int) -> str:
    return f"images/{index:06d}.jpg"


def label_row(case: Case, image: str) -> dict[str, str]:
    """The CSV row of ``case`` (booleans as 0/1, cdr with three decimals)."""

    def flag(value: bool) -> str:
        return "1" if value else "0"

    return {
        "image": image,
        "eye": case.eye,
        "field": case.field,
        "dr_grade": str(case.dr_grade),
        "referable_dr": flag(case.referable_dr),
        "dme": flag(case.dme),
        "cdr": f"{case.cdr:.3f}",
        "glaucoma_suspect": flag(case.glaucoma_suspect),
        "notch": flag(case.notch),
        "gradable": flag(case.gradable),
        "quality": case.quality,
        "defect": case.defect or "none",
        "camera": case.camera,
        "pigmentation": case.pigmentation,
        "age_band": case.age_band,
        "sex": case.sex,
        "seed": str(case.seed),
    }


def _write_one(
    job: tuple[Path, int, int, tuple[int, int] | None, int | None],
) -> dict[str, str]:
    out, seed, index, size, max_side = job
    case = case_for(seed, index, size, max_side)
    name = image_name(index)
    (out / name).write_bytes(render_layers(case).jpeg)
    return label_row(case, name)


def _init_worker() -> None:
    cv2.setNumThreads(1)  # one process per core; OpenCV's own threads would only compete


def write_dataset(
    out: Path,
    n: int,
    seed: int,
    size: tuple[int, int] | None = None,
    workers: int = 1,
    max_side: int | None = None,
) -> Path:
    """Write ``n`` images and their labels under ``out``; returns the path of labels.csv.

    ``size`` is (height, width) for every image, or None for each camera's native size
    (scaled down by ``max_side``, see :func:`appliance.synth.case.draw_case`).
    ``workers`` > 1 renders in that many processes; the files are the same either way.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if size is not None and (len(size) != 2 or min(size) < 64):
        raise ValueError(f"size must be (height, width) with both >= 64, got {size}")
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    if max_side is not None and max_side < 128:
        raise ValueError(f"max_side must be >= 128, got {max_side}")
    jobs = [(out, seed, i, size, max_side) for i in range(n)]
    if workers == 1 or n < 2:
        rows = [_write_one(job) for job in jobs]
    else:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker) as pool:
            rows = list(pool.map(_write_one, jobs, chunksize=max(1, n // (8 * workers))))
    labels = out / "labels.csv"
    with labels.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    LOGGER.info("wrote %d synthetic images to %s", n, out)
    return labels


def _size(text: str) -> tuple[int, int]:
    """``WxH`` → (height, width)."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        message = f"expected WIDTHxHEIGHT such as 768x768, got {text!r}"
        raise argparse.ArgumentTypeError(message) from None
    if min(width, height) < 64:
        raise argparse.ArgumentTypeError(f"width and height must be >= 64, got {text!r}")
    return height, width


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``appliance synth``."""
    parser.add_argument("--out", type=Path, required=True, help="folder to write into")
    parser.add_argument("--n", type=_non_negative, required=True, help="number of images")
    parser.add_argument("--seed", type=_non_negative, default=0, help="dataset seed")
    parser.add_argument(
        "--size",
        type=_size,
        default=None,
        metavar="WxH",
        help="image size, e.g. 768x768 (default: each camera profile's native resolution)",
    )
    parser.add_argument(
        "--max-side",
        type=_positive,
        default=None,
        metavar="PX",
        help="without --size: scale each camera's frame so its longer side is drawn between "
        "PX/2 and PX (keeps the camera's shape: cut circles, crops)",
    )
    parser.add_argument("--workers", type=_positive, default=1, help="processes to render with")


def run(args: argparse.Namespace) -> int:
    """Write the dataset described by ``args`` and print a short summary; returns 0."""
    labels = write_dataset(args.out, args.n, args.seed, args.size, args.workers, args.max_side)
    with labels.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    grades = Counter(row["dr_grade"] for row in rows)
    quality = Counter(row["quality"] for row in rows)
    print(f"wrote {len(rows)} images and {labels}")
    print("dr_grade " + " ".join(f"{g}:{grades[g]}" for g in "01234"))
    print("quality " + " ".join(f"{q}:{quality[q]}" for q in ("good", "usable", "reject")))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m appliance.synth.dataset --out DIR --n N --seed S [--size WxH] [--workers K]``."""
    parser = argparse.ArgumentParser(
        prog="appliance synth", description="Write a labelled synthetic fundus dataset."
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
