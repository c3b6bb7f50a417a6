"""The review desk's OCT part: each OCT volume of a visit with its numbers, its thickness map
with the ETDRS grid, and any of its B-scans with the ILM, RPE and fluid drawn.

Numbers come from the stored record (``visits.OctRecord``) and the visit's outcome (the eye's
CST threshold for the device and the rules' centre-involving DME answer). Pictures are made
here from what the worker stored: the thickness map (``.npy``) drawn by
``dicom/oct_pictures.py``; a B-scan from the OPT object as received (the capture's file,
``capture/oct.py``) with the boundaries and fluid the worker kept for every B-scan
(``pipeline/oct.py`` ``OctLayers``, binned rows mapped back to the frame's own). A volume
stored before the layers were kept shows its B-scans plain. The decoded volume of the last few
volumes opened is kept in memory so moving the slider does not decode the object again.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from appliance.capture.oct import read_oct
from appliance.capture.pixels import Limits
from appliance.config import Settings
from appliance.dicom.oct_pictures import bscan_rgb, png_bytes, thickness_map_rgb
from appliance.domain import ETDRS_SUBFIELDS
from appliance.inference.oct.prepare import even_cut, original_position
from appliance.pipeline import oct as oct_pipeline
from appliance.pipeline.oct import OctLayers, OctScan, visit_scans
from appliance.store import BlobStore, Store
from appliance.visits import VisitNotFound, scope

CACHED_VOLUMES = 2


@dataclass(frozen=True)
class OctView:
    """One OCT volume as the review page shows it."""

    capture_id: int
    eye: str | None
    status: str  # "measured" / "not_analysed"
    message: str
    gradable: bool | None
    quality_reasons: tuple[str, ...]
    signal_db: float | None
    cst_um: float | None
    cst_threshold_um: float | None
    ci_dme: bool | None  # the rules' answer for the eye (None: no automated answer)
    subfields: tuple[tuple[str, float | None], ...]  # (ETDRS subfield, µm), central first
    macular_volume_mm3: float | None
    p_fluid_centre: float | None
    p_fluid_any: float | None
    device: str
    frames: int  # B-scans in the volume (0: not measured)
    central_frame: int
    has_map: bool
    has_layers: bool

    @property
    def over_threshold(self) -> bool | None:
        if self.cst_um is None or self.cst_threshold_um is None:
            return None
        return self.cst_um >= self.cst_threshold_um


def _eye_of(eyes: list[dict[str, Any]], capture_id: int) -> dict[str, Any]:
    return next((e for e in eyes if capture_id in e.get("oct_capture_ids", [])), {})


def oct_view(scan: OctScan, eyes: list[dict[str, Any]]) -> OctView:
    record, finding = scan.record, scan.finding
    eye = _eye_of(eyes, scan.capture_id)
    shape = record.shape
    return OctView(
        capture_id=scan.capture_id,
        eye=finding.laterality if finding is not None else eye.get("eye"),
        status=str(record.data.get("status") or ("measured" if finding else "not_analysed")),
        message=str(record.data.get("message") or ""),
        gradable=finding.gradable if finding is not None else None,
        quality_reasons=tuple(finding.quality_reasons) if finding is not None else (),
        signal_db=finding.signal_db if finding is not None else None,
        cst_um=finding.cst_um if finding is not None else None,
        cst_threshold_um=eye.get("cst_threshold_um"),
        ci_dme=eye.get("oct_dme"),
        subfields=tuple(
            (name, (finding.subfield_um or {}).get(name) if finding is not None else None)
            for name in ETDRS_SUBFIELDS
        ),
        macular_volume_mm3=finding.macular_volume_mm3 if finding is not None else None,
        p_fluid_centre=finding.p_fluid_centre if finding is not None else None,
        p_fluid_any=finding.p_fluid_any if finding is not None else None,
        device=finding.device if finding is not None else "",
        frames=shape[0] if shape is not None and finding is not None else 0,
        central_frame=int(record.central_frame or 0),
        has_map=bool(record.thickness_map),
        has_layers=bool(record.layers),
    )


def _stretch(values: np.ndarray, factor: int, size: int) -> np.ndarray:
    """A per-binned-A-scan array back on ``size`` original A-scans (prepare.Binned's rule)."""
    if factor == 1:
        return values[:size] if values.size >= size else np.pad(values, (0, size - values.size))
    centres = original_position(np.arange(values.shape[-1]), factor, size)
    return np.interp(np.arange(size), centres, values, left=np.nan, right=np.nan)


def draw_frame(frame: np.ndarray, layers: OctLayers | None, index: int) -> np.ndarray:
    """B-scan ``index`` (rows, A-scans as received) with its ILM, RPE and fluid, RGB."""
    if layers is None or index >= layers.ilm_px.shape[0]:
        return bscan_rgb(frame)
    rows, ascans = frame.shape
    rf, af = layers.row_factor, layers.ascan_factor
    ilm, rpe = (
        _stretch(original_position(line[index].astype(np.float64), rf, rows), af, ascans)
        for line in (layers.ilm_px, layers.rpe_px)
    )
    small = layers.fluid[index].astype(np.uint8)
    big = cv2.resize(small, (small.shape[1] * af, small.shape[0] * rf),
                     interpolation=cv2.INTER_NEAREST)  # fmt: skip
    mask = np.zeros((rows, ascans), bool)
    top, left = even_cut(rows, rf), even_cut(ascans, af)
    h, w = min(big.shape[0], rows), min(big.shape[1], ascans)
    mask[max(top, 0) : max(top, 0) + h, max(left, 0) : max(left, 0) + w] = big[:h, :w] > 0
    return bscan_rgb(frame, ilm, rpe, mask)


@contextmanager
def _kept() -> Iterator[None]:
    """A file deleted after delivery (retention) is said, not crashed on."""
    try:
        yield
    except FileNotFoundError:
        raise VisitNotFound(
            "This OCT volume's files were deleted after delivery (retention)."
        ) from None


class OctReview:
    """The OCT volumes of a visit for the review desk (read-only)."""

    def __init__(self, store: Store, blobs: BlobStore, settings: Settings) -> None:
        self.store = store
        self.blobs = blobs
        self.limits = Limits(
            max_image_pixels=settings.max_image_pixels,
            max_inflated_bytes=settings.max_inflated_bytes,
            max_image_frames=settings.max_image_frames,
        )
        self._volumes: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def scans(self, visit_key: str) -> list[OctView]:
        """The visit's OCT volumes, oldest first."""
        found = scope(visit_key)
        row = self.store.one(
            "SELECT payload FROM visit_outcomes WHERE visit_key = ? ORDER BY id DESC LIMIT 1",
            (visit_key,),
        )
        eyes = json.loads(row["payload"]).get("eyes", []) if row else []
        return [oct_view(s, eyes) for s in visit_scans(self.store, found.where, found.params)]

    def _scan(self, visit_key: str, capture_id: int) -> OctScan:
        found = scope(visit_key)
        scans = visit_scans(self.store, f"c.id = ? AND {found.where}", (capture_id, *found.params))
        if not scans:
            raise VisitNotFound("There is no such OCT volume in this visit.")
        return scans[0]

    def thickness_map_png(self, visit_key: str, capture_id: int) -> bytes:
        """The thickness map in colour with the ETDRS circles on the fovea (PNG)."""
        scan = self._scan(visit_key, capture_id)
        with _kept():
            values = oct_pipeline.thickness_map(self.blobs, scan.record)
        spacing = scan.record.map_spacing_mm
        if values is None or spacing is None:
            raise VisitNotFound("This OCT volume has no thickness map (not measured).")
        fovea = scan.finding.fovea_mm if scan.finding is not None else None
        return png_bytes(thickness_map_rgb(values, spacing, fovea))

    def bscan_png(self, visit_key: str, capture_id: int, index: int) -> bytes:
        """B-scan ``index`` of the volume (0 … frames-1; anything else: not found) as received,
        with its ILM, RPE and fluid drawn where they were kept (PNG)."""
        scan = self._scan(visit_key, capture_id)
        shape = scan.record.shape
        if shape is None or scan.finding is None:
            raise VisitNotFound("This OCT volume was not measured.")
        if not 0 <= index < shape[0]:
            raise VisitNotFound(f"There is no B-scan {index}: this volume has {shape[0]}.")
        with _kept():
            volume = self._volume(scan.file_path)
            layers = oct_pipeline.layers(self.blobs, scan.record)
        if index >= volume.shape[0]:
            raise VisitNotFound(f"There is no B-scan {index} in the stored object.")
        return png_bytes(draw_frame(volume[index], layers, index))

    def _volume(self, file_path: str) -> np.ndarray:
        with self._lock:
            if file_path in self._volumes:
                if not self.blobs.resolve(file_path).exists():  # purged: not from memory either
                    del self._volumes[file_path]
                    raise FileNotFoundError(file_path)
                self._volumes.move_to_end(file_path)
                return self._volumes[file_path]
        vol = read_oct(self.blobs.read(file_path), self.limits)
        if vol.volume is None:
            raise VisitNotFound(f"The OCT object cannot be shown: {vol.problem or 'no volume'}.")
        with self._lock:
            self._volumes[file_path] = vol.volume
            while len(self._volumes) > CACHED_VOLUMES:
                self._volumes.popitem(last=False)
        return vol.volume
