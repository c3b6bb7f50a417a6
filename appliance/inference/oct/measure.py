"""One OCT volume measured: boundaries → thickness map, fovea (inner retina) → ETDRS grid, fluid.

:func:`measure_oct` is pure (numpy/OpenCV, no model file) unless it is given a ``fluid``
detector (the optional ``oct-fluid`` model, :class:`appliance.inference.oct.fluid_net.FluidNet`),
which then measures the fluid in place of the classical dark-pocket detector; the measurement
says which did (``fluid_method``). Demonstration, not clinically validated.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from appliance.inference.oct.etdrs import EtdrsGrid, etdrs_grid, isotropic
from appliance.inference.oct.fluid import FluidResult, detect_fluid
from appliance.inference.oct.fovea import find_fovea_inner
from appliance.inference.oct.segment import segment_volume

LOGGER = logging.getLogger(__name__)

CLASSICAL_FLUID = "classical dark-pocket detector"


class FluidDetector(Protocol):
    """What measures fluid in place of :func:`detect_fluid` (``FluidNet``)."""

    @property
    def method(self) -> str: ...

    def detect(
        self,
        volume: np.ndarray,
        ilm_px: np.ndarray,
        rpe_px: np.ndarray,
        spacing_mm: tuple[float, float, float],
        fovea_mm: tuple[float, float],
    ) -> FluidResult: ...


@dataclass(frozen=True)
class OctMeasurement:
    """What the classical baseline measured in one macular volume."""

    ilm_px: np.ndarray  # float (frames, A-scans), NaN on blank B-scans
    rpe_px: np.ndarray  # outer RPE boundary
    thickness_um: np.ndarray  # ILM-RPE, (frames, A-scans)
    fovea_mm: tuple[float, float]  # (x, y) from the scan centre
    fovea_index: tuple[float, float]  # (frame, A-scan), fractional
    etdrs: EtdrsGrid
    fluid: FluidResult
    blank_frames: tuple[int, ...]
    fluid_method: str = CLASSICAL_FLUID  # which detector measured ``fluid``

    @property
    def cst_um(self) -> float:
        return self.etdrs.cst_um


def measure_oct(
    volume: np.ndarray,
    spacing_mm: tuple[float, float, float],
    eye: str,
    fluid: FluidDetector | None = None,
) -> OctMeasurement:
    """Measure ``volume`` (frames, rows, A-scans; uint8 or float) with ``spacing_mm``
    (between B-scans, axial, lateral) of the ``eye`` ("R" / "L"); fluid by ``fluid`` when
    given, else by the classical detector."""
    if volume.ndim != 3:
        raise ValueError(f"expected a (frames, rows, A-scans) volume, got shape {volume.shape}")
    if len(spacing_mm) != 3 or not all(s > 0 for s in spacing_mm):
        raise ValueError(f"spacing_mm must be three positive numbers, got {spacing_mm!r}")
    if eye not in ("R", "L"):
        raise ValueError(f"eye must be 'R' or 'L', got {eye!r}")
    frame_mm, axial_mm, lateral_mm = spacing_mm
    bounds = segment_volume(volume, axial_mm)
    thickness = (bounds.rpe_px - bounds.ilm_px) * axial_mm * 1000.0
    iso, step = isotropic(thickness, (frame_mm, lateral_mm))
    fovea = find_fovea_inner(volume, bounds.ilm_px, spacing_mm)
    grid = etdrs_grid(iso, step, eye, fovea)
    f_total, _, ascans = volume.shape
    index = (fovea[1] / frame_mm + (f_total - 1) / 2.0, fovea[0] / lateral_mm + (ascans - 1) / 2.0)
    if fluid is None:
        found = detect_fluid(volume, bounds.ilm_px, bounds.rpe_px, spacing_mm, fovea)
        method = CLASSICAL_FLUID
    else:
        found = fluid.detect(volume, bounds.ilm_px, bounds.rpe_px, spacing_mm, fovea)
        method = fluid.method
    LOGGER.debug("OCT measured: CST %.0f µm, fluid p=%.2f", grid.cst_um, found.p_centre)
    return OctMeasurement(
        ilm_px=bounds.ilm_px,
        rpe_px=bounds.rpe_px,
        thickness_um=thickness,
        fovea_mm=fovea,
        fovea_index=index,
        etdrs=grid,
        fluid=found,
        blank_frames=bounds.blank_frames,
        fluid_method=method,
    )
