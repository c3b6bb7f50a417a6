"""A labelled OCT set: what each volume's reference standard says, and how to load it.

:class:`OctItem` is one volume's metadata and truth known without reading pixels (eye,
spacing, CST, per-volume fluid and quality labels); :meth:`OctItem.load` reads the volume and
the array truth (:class:`OctSample`: ILM / RPE boundaries in pixels, the fluid mask). Every
field the format does not give is None, and the report leaves that figure out.

:func:`read_synth` reads the appliance's own layout (``synth``, written by
``appliance synth --oct``); :func:`appliance.validate.oct_formats.read_oct_set` reads it or
the public layouts sites use (``retouch``, ``duke``). The synth layout::

    labels.csv            one line per volume (columns: appliance.synth.oct.dataset.COLUMNS)
    volumes/NNNNNN.npy    uint8 (frames, rows, A-scans), display units
    truth/NNNNNN.npz      ilm_px, rpe_px (float32 (frames, A-scans), NaN where unknown),
                          fluid_mask (bool volume), thickness_um

``labels.csv`` gives ``eye`` (R/L), ``spacing_frame_mm``, ``spacing_axial_mm``,
``spacing_lateral_mm``, ``cst_um``, ``centre_fluid``, ``ci_dme``, ``gradable`` and ``quality``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from appliance.validate.table import Cells, read_table

LOGGER = logging.getLogger(__name__)

MAX_VOLUME_BYTES = 1 << 30  # a volume larger than this is refused, not read
_SYNTH_COLUMNS = (
    "volume", "truth", "eye", "spacing_frame_mm", "spacing_axial_mm", "spacing_lateral_mm",
    "cst_um", "centre_fluid", "ci_dme", "gradable",
)  # fmt: skip


@dataclass(frozen=True)
class OctSample:
    """A volume's pixels and the array truth that comes with it."""

    volume: np.ndarray  # (frames, rows, A-scans), uint8 or float
    ilm_px: np.ndarray | None = None  # float (frames, A-scans), NaN where not annotated
    rpe_px: np.ndarray | None = None  # outer RPE / Bruch's membrane boundary
    fluid_mask: np.ndarray | None = None  # bool (frames, rows, A-scans)


@dataclass(frozen=True)
class OctItem:
    """One volume of a labelled set; ``files`` are hashed into the report."""

    name: str
    files: tuple[Path, ...]
    eye: str  # "R" / "L"
    spacing_mm: tuple[float, float, float]  # between B-scans, axial, lateral
    loader: Callable[[], OctSample] = field(repr=False, compare=False)
    cst_um: float | None = None
    centre_fluid: bool | None = None  # fluid inside the central 1 mm
    any_fluid: bool | None = None  # fluid anywhere in the volume (None: read it from the mask)
    ci_dme: bool | None = None  # as labelled (the report re-derives it from cst_um when known)
    gradable: bool | None = None
    quality: str | None = None
    notes: tuple[str, ...] = ()

    def load(self) -> OctSample:
        return self.loader()


def check_spacing(spacing: tuple[float, float, float], where: str) -> tuple[float, float, float]:
    if len(spacing) != 3 or not all(np.isfinite(s) and 0 < s < 10 for s in spacing):
        raise ValueError(
            f"{where}: spacing must be three positive millimetre values, got {spacing}"
        )
    return (float(spacing[0]), float(spacing[1]), float(spacing[2]))


def _inside(root: Path, relative: str, where: str) -> Path:
    path = (root / relative).resolve()
    if not path.is_relative_to(root.resolve()):
        raise ValueError(f"{where}: {relative!r} points outside {root}")
    if not path.is_file():
        raise ValueError(f"{where}: {relative!r} is not a file in {root}")
    return path


def _load_synth(volume: Path, truth: Path) -> OctSample:
    if volume.stat().st_size > MAX_VOLUME_BYTES:
        raise ValueError(f"{volume}: over {MAX_VOLUME_BYTES} bytes")
    array = np.load(volume, allow_pickle=False)
    if array.ndim != 3:
        raise ValueError(f"{volume}: expected (frames, rows, A-scans), got shape {array.shape}")
    with np.load(truth, allow_pickle=False) as npz:
        ilm = npz["ilm_px"].astype(np.float64) if "ilm_px" in npz else None
        rpe = npz["rpe_px"].astype(np.float64) if "rpe_px" in npz else None
        mask = npz["fluid_mask"].astype(bool) if "fluid_mask" in npz else None
    plane = (array.shape[0], array.shape[2])
    for name, value in (("ilm_px", ilm), ("rpe_px", rpe)):
        if value is not None and value.shape != plane:
            raise ValueError(f"{truth}: {name} has shape {value.shape}, expected {plane}")
    if mask is not None and mask.shape != array.shape:
        raise ValueError(f"{truth}: fluid_mask has shape {mask.shape}, expected {array.shape}")
    return OctSample(array, ilm, rpe, mask)


def _number(cells: Cells, column: str, low: float, high: float) -> float:
    value = cells.number(column, low, high)
    if value is None:
        raise cells.error(column, "empty value")
    return value


def _synth_item(root: Path, cells: Cells, where: str) -> OctItem:
    volume = _inside(root, cells.required("volume"), where)
    truth = _inside(root, cells.required("truth"), where)
    eye = cells.required("eye").upper()[:1]
    if eye not in ("R", "L"):
        raise cells.error("eye", f"expected R or L, got {cells.text('eye')!r}")
    frame, axial, lateral = (
        _number(cells, f"spacing_{axis}_mm", 1e-6, 10.0) for axis in ("frame", "axial", "lateral")
    )
    return OctItem(
        name=cells.required("volume"),
        files=(volume, truth),
        eye=eye,
        spacing_mm=check_spacing((frame, axial, lateral), where),
        loader=lambda: _load_synth(volume, truth),
        cst_um=cells.number("cst_um", 0.0, 2000.0),
        centre_fluid=cells.flag("centre_fluid"),
        ci_dme=cells.flag("ci_dme"),
        gradable=cells.flag("gradable"),
        quality=cells.text("quality") or None,
    )


def read_synth(root: Path, labels: Path | None = None) -> tuple[list[OctItem], Path]:
    """The appliance's own layout (module docstring); returns the items and the labels file."""
    path = Path(labels) if labels is not None else Path(root) / "labels.csv"
    table = read_table(path)
    table.require(_SYNTH_COLUMNS)
    items = [
        _synth_item(Path(root), cells, f"{path}: line {cells.line}") for cells in table.cells()
    ]
    return items, path
