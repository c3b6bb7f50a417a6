"""One OCT volume through the stages: read (capture) → measure (inference) → quality with the
measured fovea (quality) → :class:`OctFinding`, plus the pictures and arrays kept for the
documents and the station.

Pure apart from the blob store it is given in :func:`save_arrays`. A volume that cannot be
measured (no spacing, absurd geometry, no eye, a measurement that fails) is answered with a
``not_analysed`` record that says why; the object itself is stored and forwarded as received.
What the stored record holds is read back by ``visits.OctRecord``; :func:`visit_scans` and
:func:`thickness_map` give a visit's volumes to whoever builds its documents.
"""

from __future__ import annotations

import io
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import cv2
import numpy as np

from appliance.capture.oct import OctVolume, read_oct
from appliance.capture.pixels import Limits
from appliance.domain import ETDRS_SUBFIELDS, OctFinding, QualityReport
from appliance.inference.oct.bscan import draw_layers
from appliance.inference.oct.measure import (
    CLASSICAL_FLUID,
    FluidDetector,
    OctMeasurement,
    measure_oct,
)
from appliance.inference.oct.prepare import bin_volume
from appliance.metrics import Metrics
from appliance.pipeline.image import quality_json
from appliance.pipeline.visit import oct_finding_from_json
from appliance.quality.oct import assess_oct
from appliance.store import BlobStore
from appliance.visits import ImageRecord, OctRecord

LOGGER = logging.getLogger(__name__)

ALGORITHM = "classical OCT baseline (ILM/RPE paths, ETDRS grid, dark-pocket fluid)"
DEMONSTRATION = "demonstration, not clinically validated"
THUMBNAIL_WIDTH = 512
CENTRE_NOT_MEASURED = "central_subfield_not_measured"
BLOB_KEYS = ("thickness_map", "bscan", "bscan_layers", "layers")  # record["oct"] blob paths


@dataclass(frozen=True)
class OctLayers:
    """Every B-scan's measured boundaries and fluid, at the measured (binned) resolution: the
    review's B-scan slider draws them over the OPT's own frames. ``ilm_px`` / ``rpe_px``
    (frames, binned A-scans), binned rows, NaN where not found; ``fluid`` bool (frames, binned
    rows, binned A-scans); a binned row / A-scan covers ``row_factor`` / ``ascan_factor`` of
    the original (inference/oct/prepare.py)."""

    ilm_px: np.ndarray
    rpe_px: np.ndarray
    fluid: np.ndarray
    row_factor: int
    ascan_factor: int

    def to_bytes(self) -> bytes:
        """A compressed ``.npz``: boundaries as float16, fluid as packed bits (a few kB)."""
        buffer = io.BytesIO()
        np.savez_compressed(
            buffer,
            ilm_px=self.ilm_px.astype(np.float16),
            rpe_px=self.rpe_px.astype(np.float16),
            fluid_bits=np.packbits(self.fluid.astype(bool), axis=None),
            fluid_shape=np.asarray(self.fluid.shape, np.int64),
            factors=np.asarray((self.row_factor, self.ascan_factor), np.int64),
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> OctLayers:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            shape = tuple(int(v) for v in npz["fluid_shape"])
            count = int(np.prod(shape))
            fluid = np.unpackbits(npz["fluid_bits"], count=count).astype(bool).reshape(shape)
            factors = [int(v) for v in npz["factors"]]
            return cls(npz["ilm_px"].astype(np.float32), npz["rpe_px"].astype(np.float32),
                       fluid, factors[0], factors[1])  # fmt: skip


@dataclass(frozen=True)
class OctAnalysis:
    """What the pipeline learnt from one OPT object. ``finding`` is None when the volume could
    not be analysed (``message`` says why); measurements in it are None when not gradable."""

    status: str  # "measured" or "not_analysed"
    message: str
    finding: OctFinding | None = None
    quality: QualityReport | None = None
    spacing_mm: tuple[float, float, float] | None = None  # of the volume as received
    shape: tuple[int, int, int] | None = None  # of the volume as received
    central_frame: int | None = None
    thickness_um: np.ndarray | None = None  # float32 (frames, A-scans), gradable volumes only
    map_spacing_mm: tuple[float, float] | None = None  # (between B-scans, between its A-scans)
    bscan: np.ndarray | None = None  # uint8 (rows, A-scans): the central B-scan
    bscan_layers: np.ndarray | None = None  # RGB thumbnail with the ILM / RPE drawn
    layers: OctLayers | None = None  # every B-scan's boundaries and fluid, for the review
    fluid_method: str | None = None  # which detector measured the fluid (None: not measured)
    timings_ms: dict[str, float] = field(default_factory=dict)


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


def _value(number: float) -> float | None:
    return round(float(number), 2) if math.isfinite(number) else None


def _not_analysed(
    reason: str, timings: dict[str, float], vol: OctVolume | None = None
) -> OctAnalysis:
    LOGGER.info("OCT not analysed: %s", reason)
    return OctAnalysis(
        status="not_analysed",
        message=f"OCT received and stored; not analysed: {reason}.",
        spacing_mm=vol.spacing_mm if vol is not None else None,
        timings_ms=timings,
    )


def _finding(
    capture_id: int | None, vol: OctVolume, m: OctMeasurement, quality: QualityReport
) -> OctFinding:
    signal = quality.metrics.get("signal_db")
    common: dict[str, Any] = {
        "capture_id": capture_id,
        "laterality": vol.laterality,
        "gradable": quality.gradable,
        "quality_reasons": tuple(quality.reasons),
        "device": vol.device,
        "signal_db": _value(signal) if signal is not None else None,
    }
    if not quality.gradable:
        return OctFinding(**common)
    cst = _value(m.etdrs.cst_um)
    return OctFinding(
        **common,
        cst_um=cst,
        subfield_um={n: _value(m.etdrs.thickness_um.get(n, math.nan)) for n in ETDRS_SUBFIELDS},
        macular_volume_mm3=_value(m.etdrs.volume_mm3),
        fovea_mm=(round(m.fovea_mm[0], 3), round(m.fovea_mm[1], 3))
        if all(math.isfinite(v) for v in m.fovea_mm)
        else None,
        p_fluid_centre=round(float(m.fluid.p_centre), 4),
        p_fluid_any=round(float(m.fluid.p_any), 4),
        fluid_volume_mm3=round(float(m.fluid.volume_mm3), 5),
        human_grading=() if cst is not None else (CENTRE_NOT_MEASURED,),
    )


def _central_frame(m: OctMeasurement, frames: int) -> int:
    index = m.fovea_index[0]
    if not math.isfinite(index):
        return frames // 2
    return int(min(max(round(index), 0), frames - 1))


def analyse_oct(
    data: bytes, limits: Limits, capture_id: int | None, fluid: FluidDetector | None = None
) -> OctAnalysis:
    """Measure and grade one stored OPT object; its fluid by ``fluid`` (the installed
    ``oct-fluid`` model, loaded once by whoever builds the worker) when given, else by the
    classical detector. Raises ``ApplianceError`` only for what ingest should have refused;
    anything else unmeasurable is a ``not_analysed`` answer."""
    timings: dict[str, float] = {}
    started = time.perf_counter()
    vol = read_oct(data, limits)
    timings["oct_read_ms"] = _ms(started)
    if vol.problem is not None or vol.volume is None or vol.spacing_mm is None:
        return _not_analysed(vol.problem or "no volume", timings, vol)
    try:
        return _analyse(vol, capture_id, timings, fluid)
    except Exception as exc:  # a volume the baseline cannot follow is said, not crashed on
        LOGGER.exception("OCT capture %s: measurement failed", capture_id)
        return _not_analysed(f"the measurement failed ({type(exc).__name__})", timings, vol)


def _analyse(
    vol: OctVolume,
    capture_id: int | None,
    timings: dict[str, float],
    fluid: FluidDetector | None = None,
) -> OctAnalysis:
    assert vol.volume is not None and vol.spacing_mm is not None and vol.laterality is not None
    started = time.perf_counter()
    binned = bin_volume(vol.volume, vol.spacing_mm)  # the resolution the baseline was validated at
    m = measure_oct(binned.volume, binned.spacing_mm, vol.laterality, fluid)
    timings["oct_measure_ms"] = _ms(started)
    started = time.perf_counter()
    fovea = m.fovea_mm if all(math.isfinite(v) for v in m.fovea_mm) else None
    quality = assess_oct(binned.volume, binned.spacing_mm, fovea)
    timings["oct_quality_ms"] = _ms(started)
    frames, rows, ascans = vol.volume.shape
    centre = _central_frame(m, frames)
    bscan = vol.volume[centre]
    ilm, rpe = (
        binned.to_original_ascans(binned.to_original_rows(line[centre]), ascans)
        for line in (m.ilm_px, m.rpe_px)
    )
    reasons = ", ".join(r.removeprefix("oct_").replace("_", " ") for r in quality.reasons)
    by = "" if m.fluid_method == CLASSICAL_FLUID else f"; fluid by {m.fluid_method}"
    return OctAnalysis(
        status="measured",
        message=(
            f"OCT measured ({ALGORITHM}{by}; {DEMONSTRATION})."
            if quality.gradable
            else f"OCT not gradable ({reasons}): retake the OCT scan."
        ),
        finding=_finding(capture_id, vol, m, quality),
        quality=quality,
        spacing_mm=vol.spacing_mm,
        shape=(int(frames), int(rows), int(ascans)),
        central_frame=centre,
        thickness_um=m.thickness_um.astype(np.float32) if quality.gradable else None,
        map_spacing_mm=(binned.spacing_mm[0], binned.spacing_mm[2]),
        bscan=np.ascontiguousarray(bscan),
        bscan_layers=draw_layers(bscan, ilm, rpe, THUMBNAIL_WIDTH),
        layers=OctLayers(m.ilm_px, m.rpe_px, m.fluid.mask, binned.row_factor, binned.ascan_factor),
        fluid_method=m.fluid_method,
        timings_ms=timings,
    )


def _png(image: np.ndarray) -> bytes:
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, png = cv2.imencode(".png", image)
    if not ok:
        raise ValueError("OpenCV could not encode a PNG")
    return png.tobytes()


def save_arrays(blobs: BlobStore, analysis: OctAnalysis) -> dict[str, str | None]:
    """The thickness map (``.npy``, float32 µm, frames x the measured A-scans: spacing in
    ``map_spacing_mm``), the central B-scan as received (PNG, greyscale) and its thumbnail with
    the layers drawn (PNG, RGB), and every B-scan's boundaries and fluid (``.npz``,
    :class:`OctLayers`) as blobs; their paths."""
    paths: dict[str, str | None] = dict.fromkeys(BLOB_KEYS)
    if analysis.thickness_um is not None:
        buffer = io.BytesIO()
        np.save(buffer, analysis.thickness_um.astype(np.float32), allow_pickle=False)
        paths["thickness_map"] = blobs.put(buffer.getvalue(), "application/x-npy")
    if analysis.bscan is not None:
        paths["bscan"] = blobs.put(_png(analysis.bscan), "image/png")
    if analysis.bscan_layers is not None:
        paths["bscan_layers"] = blobs.put(_png(analysis.bscan_layers), "image/png")
    if analysis.layers is not None:
        paths["layers"] = blobs.put(analysis.layers.to_bytes(), "application/x-npz")
    return paths


def oct_json(analysis: OctAnalysis, paths: dict[str, str | None]) -> dict[str, Any]:
    """The stored record of an OPT capture (``results.payload``, kind ``screening``; read back by
    ``visits.ImageRecord`` / ``visits.OctRecord``)."""
    finding = analysis.finding
    quality = analysis.quality
    return {
        "status": analysis.status,
        "message": analysis.message,
        "modality": "OPT",
        "gradable": quality.gradable if quality is not None else None,
        "quality": quality_json(quality) if quality is not None else None,
        "laterality": finding.laterality if finding is not None else None,
        "laterality_source": "dicom" if finding is not None else None,
        "laterality_mismatch": False,
        "field": None,
        "finding": None,  # no photograph finding: the OCT's is under "oct"
        "human_grading": list(finding.human_grading) if finding is not None else [],
        "timings_ms": analysis.timings_ms,
        "oct": {
            "finding": asdict(finding) if finding is not None else None,
            "algorithm": ALGORITHM,
            "fluid_method": analysis.fluid_method,
            "statement": DEMONSTRATION,
            "spacing_mm": list(analysis.spacing_mm) if analysis.spacing_mm else None,
            "shape": list(analysis.shape) if analysis.shape else None,
            "central_frame": analysis.central_frame,
            "map_spacing_mm": list(analysis.map_spacing_mm) if analysis.map_spacing_mm else None,
            **{**dict.fromkeys(BLOB_KEYS), **paths},
        },
    }


def audit_detail(analysis: OctAnalysis) -> dict[str, Any]:
    """What the audit event of an OCT analysis says (no PHI)."""
    finding = analysis.finding
    return {
        "stage": "oct_analysis",
        "status": analysis.status,
        "algorithm": ALGORITHM,
        "fluid_method": analysis.fluid_method,
        "gradable": None if finding is None else finding.gradable,
        "reasons": [] if finding is None else list(finding.quality_reasons),
        "cst_um": None if finding is None else finding.cst_um,
        "p_fluid_centre": None if finding is None else finding.p_fluid_centre,
    }


def observe(metrics: Metrics, analysis: OctAnalysis) -> None:
    """Stage timings and the analysed counter (``screening`` = ``oct_<status>``)."""
    for key, value in analysis.timings_ms.items():
        metrics.stage_seconds.labels(stage=key.removesuffix("_ms")).observe(value / 1000)
    gradable = "unknown" if analysis.quality is None else str(analysis.quality.gradable).lower()
    metrics.analysed.labels(gradable=gradable, screening=f"oct_{analysis.status}").inc()


@dataclass(frozen=True)
class OctScan:
    """One OCT volume of a visit, as the documents need it: the capture (its file is the OPT
    object as received), the stored record and its finding (None when not analysed)."""

    capture_id: int
    sop_instance_uid: str | None
    file_path: str  # the source OPT object, relative to the data directory
    record: OctRecord
    finding: OctFinding | None


def visit_scans(db: Any, where: str, params: tuple[Any, ...]) -> list[OctScan]:
    """The OCT volumes among a visit's captures (``where``/``params``: ``visits.Scope``),
    oldest first. ``db`` is the store or a transaction's connection wrapper (``query``)."""
    rows = db.query(
        "SELECT c.id, c.sop_instance_uid, c.file_path, r.payload FROM captures c "
        "JOIN results r ON r.id = (SELECT max(id) FROM results WHERE capture_pk = c.id "
        f"AND kind = 'screening') WHERE {where} ORDER BY c.id",
        params,
    )
    out = []
    for row in rows:
        record = ImageRecord.parse(row["payload"]).oct
        if record is None:
            continue
        finding = oct_finding_from_json(record.finding) if record.finding else None
        out.append(OctScan(int(row["id"]), row["sop_instance_uid"], row["file_path"], record,
                           finding))  # fmt: skip
    return out


def thickness_map(blobs: BlobStore, record: OctRecord) -> np.ndarray | None:
    """The stored thickness map (float32 µm, frames x A-scans, spaced
    ``record.map_spacing_mm``), or None for a volume not measured or not gradable."""
    if not record.thickness_map:
        return None
    return np.asarray(np.load(io.BytesIO(blobs.read(record.thickness_map)), allow_pickle=False))


def layers(blobs: BlobStore, record: OctRecord) -> OctLayers | None:
    """Every B-scan's stored boundaries and fluid, or None (not measured, or a record stored
    before they were kept)."""
    if not record.layers:
        return None
    return OctLayers.from_bytes(blobs.read(record.layers))
