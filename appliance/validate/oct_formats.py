"""Adapters from the public OCT label layouts sites use to :class:`OctItem`.

``retouch`` — the RETOUCH challenge (Bogunović et al., IEEE TMI 2019): one folder per
volume holding ``oct.mhd`` + ``oct.raw`` (MetaImage, x = A-scans, y = depth, z = B-scans;
``ElementSpacing`` in mm) and, in the training set, ``reference.mhd`` + ``reference.raw``
(labels 0 background, 1 intraretinal fluid, 2 subretinal fluid, 3 pigment epithelial
detachment), found anywhere up to three folders below the set's root (e.g.
``Cirrus/TRAIN001/oct.mhd``). Truth: the fluid mask (IRF or SRF; PED lies under the RPE and
is not counted) and "fluid anywhere"; RETOUCH gives no layers, CST, eye or quality labels.

``duke`` — the Duke DME set (Chiu et al., Biomed. Opt. Express 2015): ``Subject_NN.mat``
(MAT level 5) with ``images`` (496 x 768 x 61: rows, A-scans, B-scans), ``manualLayers1``
(8 x 768 x 61 boundary rows, 1-based, NaN where not traced; boundary 1 is the ILM, 8 the
outer RPE / Bruch's membrane) and ``manualFluid1`` (496 x 768 x 61, non-zero = fluid), on the
11 traced B-scans. The .mat holds no spacing or eye: ``DUKE_SPACING_MM`` (Spectralis, the
paper's 3.87 µm axial, ~11.5 µm lateral, ~123 µm between B-scans) and the right eye are
assumed and said in the report's notes. Truth: ILM / RPE on the traced B-scans, fluid on
them; no CST (11 traced B-scans do not cover the central subfield densely).

Volumes that are not 8-bit are scaled to 0-255 by their 99.9th percentile before measuring.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from appliance.validate.matv5 import read_mat
from appliance.validate.mhd import read_header, read_mhd
from appliance.validate.oct_set import OctItem, OctSample, check_spacing, read_synth

LOGGER = logging.getLogger(__name__)

OCT_FORMATS = ("synth", "retouch", "duke")

RETOUCH_FLUID_LABELS = (1, 2)  # IRF, SRF (3 = PED, below the RPE)
DUKE_SPACING_MM = (0.123, 0.00387, 0.0115)  # between B-scans, axial, lateral
DUKE_GRADER = 1
_MAX_DEPTH = 3
_ASSUMED_EYE = "eye not in the format: the right eye is assumed (only which side of the grid "
_ASSUMED_EYE += "is nasal depends on it; CST and fluid do not)"


def to_display(volume: np.ndarray) -> np.ndarray:
    """uint8 as it is; anything else scaled linearly from 0 to its 99.9th percentile."""
    if volume.dtype == np.uint8:
        return volume
    values = volume.astype(np.float32)
    top = float(np.percentile(values, 99.9))
    if not np.isfinite(top) or top <= 0:
        raise ValueError("the volume has no positive signal")
    return np.clip(values * (255.0 / top), 0, 255).astype(np.uint8)


# -- RETOUCH ------------------------------------------------------------------------------------
def _retouch_spacing(path: Path, spacing: tuple[float, ...]) -> tuple[float, float, float]:
    if len(spacing) != 3:
        raise ValueError(f"{path}: expected a 3-D volume")
    x, y, z = spacing
    return check_spacing((z, y, x), str(path))


def _load_retouch(oct_path: Path, reference: Path | None) -> OctSample:
    image = read_mhd(oct_path)
    if image.array.ndim != 3:
        raise ValueError(f"{oct_path}: expected a 3-D volume, got shape {image.array.shape}")
    mask = None
    if reference is not None:
        labels = read_mhd(reference).array
        if labels.shape != image.array.shape:
            raise ValueError(
                f"{reference}: shape {labels.shape} differs from the volume's {image.array.shape}"
            )
        mask = np.isin(labels, RETOUCH_FLUID_LABELS)
    return OctSample(to_display(image.array), fluid_mask=mask)


def _retouch_item(root: Path, oct_path: Path) -> OctItem:
    header = read_header(oct_path)
    try:
        spacing = tuple(float(v) for v in header.get("ElementSpacing", "").split())
    except ValueError:
        raise ValueError(f"{oct_path}: ElementSpacing must be numbers") from None
    reference = oct_path.with_name("reference.mhd")
    ref = reference if reference.is_file() else None
    files = [oct_path, oct_path.parent / header.get("ElementDataFile", "oct.raw")]
    if ref is not None:
        ref_header = read_header(ref)
        files += [ref, ref.parent / ref_header.get("ElementDataFile", "reference.raw")]
    return OctItem(
        name=oct_path.parent.relative_to(root).as_posix(),
        files=tuple(f.resolve() for f in files if f.is_file()),
        eye="R",
        spacing_mm=_retouch_spacing(oct_path, spacing),
        loader=lambda: _load_retouch(oct_path, ref),  # "fluid anywhere" from its mask
        notes=(_ASSUMED_EYE,),
    )


def read_retouch(root: Path) -> list[OctItem]:
    """Every ``oct.mhd`` up to three folders below ``root``, sorted by path."""
    root = Path(root)
    found = sorted(
        path
        for depth in range(_MAX_DEPTH + 1)
        for path in root.glob("/".join(["*"] * depth + ["oct.mhd"]))
        if path.is_file()
    )
    return [_retouch_item(root, path) for path in found]


# -- Duke DME -----------------------------------------------------------------------------------
def _load_duke(path: Path) -> OctSample:
    layers_key, fluid_key = f"manualLayers{DUKE_GRADER}", f"manualFluid{DUKE_GRADER}"
    arrays = read_mat(path, {"images", layers_key, fluid_key})
    images, layers, fluid = arrays["images"], arrays[layers_key], arrays[fluid_key]
    if images.ndim != 3:
        raise ValueError(f"{path}: 'images' must be rows x A-scans x B-scans, got {images.shape}")
    rows, ascans, frames = images.shape
    if layers.shape != (8, ascans, frames) or fluid.shape != images.shape:
        raise ValueError(
            f"{path}: {layers_key} {layers.shape} / {fluid_key} {fluid.shape} do not match"
            f" 'images' {images.shape}"
        )
    volume = to_display(np.ascontiguousarray(images.transpose(2, 0, 1)))
    ilm = layers[0].T.astype(np.float64) - 1.0  # MATLAB rows are 1-based
    rpe = layers[7].T.astype(np.float64) - 1.0
    traced = np.isfinite(ilm).any(axis=1) | np.isfinite(rpe).any(axis=1)
    mask = np.nan_to_num(fluid).transpose(2, 0, 1) > 0
    mask &= traced[:, None, None]  # fluid is only known on the traced B-scans
    return OctSample(volume, ilm, rpe, mask)


def read_duke(root: Path) -> list[OctItem]:
    """Every ``*.mat`` directly in ``root`` (e.g. ``Subject_01.mat``), sorted by name."""
    root = Path(root)
    spacing = check_spacing(DUKE_SPACING_MM, "DUKE_SPACING_MM")
    note = (
        f"Duke .mat files carry no spacing: {spacing[1] * 1000:.2f} µm axial, "
        f"{spacing[2] * 1000:.1f} µm lateral, {spacing[0] * 1000:.0f} µm between B-scans assumed;"
        f" grader {DUKE_GRADER}'s layers and fluid on the traced B-scans"
    )
    return [
        OctItem(
            name=path.name,
            files=(path.resolve(),),
            eye="R",
            spacing_mm=spacing,
            loader=lambda path=path: _load_duke(path),  # type: ignore[misc]
            notes=(_ASSUMED_EYE, note),
        )
        for path in sorted(root.glob("*.mat"))
        if path.is_file()
    ]


def read_oct_set(root: Path, fmt: str, labels: Path | None = None) -> tuple[list[OctItem], Path]:
    """Every volume of the set in ``root`` in format ``fmt`` (one of :data:`OCT_FORMATS`),
    and the file that holds its labels (the set's folder when there is none)."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root} is not a folder")
    if fmt == "synth":
        items, where = read_synth(root, labels)
    elif fmt == "retouch":
        items, where = read_retouch(root), root
    elif fmt == "duke":
        items, where = read_duke(root), root
    else:
        raise ValueError(f"OCT format must be one of {', '.join(OCT_FORMATS)}, got {fmt!r}")
    if not items:
        raise ValueError(f"{root}: no {fmt} OCT volume found")
    LOGGER.info("read %d %s OCT volumes from %s", len(items), fmt, root)
    return items, where
