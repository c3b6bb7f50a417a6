"""OCT findings in the outcome rules: the rule file's ``[oct]`` table and what it makes of one
volume's :class:`OctFinding`.

Centre-involving diabetic macular oedema (CI-DME) is the rule file's decision, not the
measurement's: the central subfield thickness (CST) at or over the threshold for the device
that made the scan (``[[oct.device]]``, matched on manufacturer and model; else the default),
or fluid in the central subfield (``p_fluid_centre`` at or over its threshold). A volume that
is not gradable has no DME answer (the eye's OCT is ``ungradable``: retake); a gradable one
that a person must grade (``human_grading``), whose centre was not measured, or a rule file
with no ``[oct]`` table at all, has no automated answer either: the eye's OCT is
``human_grading`` and the visit can never be an automated negative.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from appliance.domain import OctFinding

LOGGER = logging.getLogger(__name__)

CST_RANGE_UM = (150.0, 500.0)
_OCT_KEYS = {"cst_threshold_um", "p_fluid_centre", "source", "device"}
_DEVICE_KEYS = {"manufacturer", "model", "cst_threshold_um", "source"}


@dataclass(frozen=True)
class OctDevice:
    """A device-specific CST threshold: ``manufacturer`` and ``model`` are matched, ignoring
    case, as parts of the finding's device ("<Manufacturer> <ManufacturerModelName>")."""

    manufacturer: str
    model: str
    cst_threshold_um: float
    source: str = ""

    def matches(self, device: str) -> bool:
        text = device.casefold()
        return self.manufacturer.casefold() in text and self.model.casefold() in text


@dataclass(frozen=True)
class OctRules:
    cst_threshold_um: float  # for devices not listed
    p_fluid_centre: float
    devices: tuple[OctDevice, ...] = ()
    source: str = ""

    def threshold_um(self, device: str) -> float:
        """The CST threshold for ``device``: the first entry that matches, else the default."""
        for entry in self.devices:
            if entry.matches(device):
                return entry.cst_threshold_um
        return self.cst_threshold_um


@dataclass(frozen=True)
class OctVerdict:
    """One volume judged by the rules: ``status`` graded / ungradable / human_grading."""

    status: str
    ci_dme: bool | None = None
    threshold_um: float | None = None


def _threshold(value: Any, where: str, name: str) -> float:
    low, high = CST_RANGE_UM
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ValueError(f"{where}: {name} must be a number of µm from {low:g} to {high:g}; "
                         f"got {value!r}")  # fmt: skip
    return float(value)


def _device(row: Any, where: str, name: str) -> OctDevice:
    if not isinstance(row, dict):
        raise ValueError(f"{where}: {name} must be a table")
    unknown = sorted(set(row) - _DEVICE_KEYS)
    if unknown:
        raise ValueError(f"{where}: {name}.{unknown[0]} is not a known key "
                         f"(known: {', '.join(sorted(_DEVICE_KEYS))})")  # fmt: skip
    texts = {}
    for key in ("manufacturer", "model"):
        value = row.get(key)
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{where}: {name}.{key} is required and must be a non-empty string")
        texts[key] = value.strip()
    source = row.get("source", "")
    if not isinstance(source, str):
        raise ValueError(f"{where}: {name}.source must be a string")
    return OctDevice(
        texts["manufacturer"],
        texts["model"],
        _threshold(row.get("cst_threshold_um"), where, f"{name}.cst_threshold_um"),
        source.strip(),
    )


def parse_oct(data: Mapping[str, Any], where: str) -> OctRules | None:
    """The ``[oct]`` table of a rule file, checked; None when the file has none."""
    table = data.get("oct")
    if table is None:
        return None
    if not isinstance(table, dict):
        raise ValueError(f"{where}: oct must be a table")
    unknown = sorted(set(table) - _OCT_KEYS)
    if unknown:
        raise ValueError(f"{where}: oct.{unknown[0]} is not a known key "
                         f"(known: {', '.join(sorted(_OCT_KEYS))})")  # fmt: skip
    p = table.get("p_fluid_centre")
    if isinstance(p, bool) or not isinstance(p, int | float) or not 0.0 < p < 1.0:
        raise ValueError(f"{where}: oct.p_fluid_centre must be a number between 0 and 1; got {p!r}")
    rows = table.get("device", [])
    if not isinstance(rows, list):
        raise ValueError(f"{where}: oct.device must be a list of [[oct.device]] tables")
    source = table.get("source", "")
    if not isinstance(source, str):
        raise ValueError(f"{where}: oct.source must be a string")
    return OctRules(
        cst_threshold_um=_threshold(table.get("cst_threshold_um"), where, "oct.cst_threshold_um"),
        p_fluid_centre=float(p),
        devices=tuple(_device(row, where, f"oct.device[{i}]") for i, row in enumerate(rows)),
        source=source.strip(),
    )


def verdict(finding: OctFinding, rules: OctRules | None) -> OctVerdict:
    """What the rules make of one volume."""
    if not finding.gradable:
        return OctVerdict("ungradable")
    if rules is None or finding.human_grading or finding.cst_um is None:
        return OctVerdict("human_grading")
    threshold = rules.threshold_um(finding.device)
    fluid = finding.p_fluid_centre is not None and finding.p_fluid_centre >= rules.p_fluid_centre
    return OctVerdict("graded", finding.cst_um >= threshold or fluid, threshold)


def eye_summary(octs: Sequence[OctFinding], rules: OctRules | None) -> dict[str, Any]:
    """One eye's OCTs in :class:`EyeOutcome` terms: ``oct_status`` graded (some gradable volume
    with an answer), human_grading (gradable but no automated answer), ungradable (none
    gradable), None (no OCT); ``oct_dme`` True if any answered volume shows CI-DME."""
    if not octs:
        return {}
    judged = [(f, verdict(f, rules)) for f in octs]
    graded = [(f, v) for f, v in judged if v.status == "graded"]
    if graded:
        status = "graded"
    elif any(v.status == "human_grading" for _, v in judged):
        status = "human_grading"
    else:
        status = "ungradable"
    worst = max(graded, key=lambda fv: (bool(fv[1].ci_dme), fv[0].cst_um or 0.0), default=None)
    return {
        "oct_status": status,
        "oct_dme": any(bool(v.ci_dme) for _, v in graded) if graded else None,
        "cst_um": worst[0].cst_um if worst else None,
        "cst_threshold_um": worst[1].threshold_um if worst else None,
        "oct_capture_ids": tuple(f.capture_id for f in octs if f.capture_id is not None),
    }
