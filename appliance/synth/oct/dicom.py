"""A synthetic OCT volume as a DICOM Ophthalmic Tomography Image (OPT), the way a camera sends it.

The object is the one OPT writer's (``capture/opt_write.py``, which a vendor export taken from
the hot folder goes through too) with a synthetic camera's header: :class:`OptHeader` names a
plausible synthetic patient and the synthetic device the rule file knows.

Used by tests, the benchmark and anyone who needs an OPT object without a camera.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset

from appliance.capture import opt_write
from appliance.capture.opt_write import ENCODINGS, OPT_SOP_CLASS, VALIDATOR_CONFLICTS, encode_opt

SYNTH_MANUFACTURER = "Appliance Synthetic"
SYNTH_MODEL = "SynthOCT"

__all__ = [
    "ENCODINGS",
    "OPT_SOP_CLASS",
    "SYNTH_MANUFACTURER",
    "SYNTH_MODEL",
    "VALIDATOR_CONFLICTS",
    "OptHeader",
    "encode_opt",
    "opt_dataset",
]


@dataclass(frozen=True)
class OptHeader(opt_write.OptHeader):
    """Who and what the object names; defaults are a plausible synthetic camera."""

    patient_id: str = "SYNTH-OCT"
    patient_name: str = "Synthetic^Oct"
    birth_date: str = "19600101"
    sex: str = "F"
    manufacturer: str = SYNTH_MANUFACTURER
    model: str = SYNTH_MODEL
    device_serial: str = "SYN-0001"
    software_versions: str = "appliance-synth"


def opt_dataset(
    volume: np.ndarray,
    spacing_mm: tuple[float, float, float],
    eye: str,
    header: opt_write.OptHeader | None = None,
) -> Dataset:
    """An uncompressed OPT dataset of ``volume`` (uint8 frames x rows x A-scans), with
    ``spacing_mm`` (between B-scans, axial, lateral) of the ``eye`` ("R" / "L")."""
    return opt_write.opt_dataset(volume, spacing_mm, eye, header or OptHeader())
