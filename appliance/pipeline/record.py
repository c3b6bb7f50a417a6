"""What a processed image writes, row by row, inside the caller's transaction: its quality
report, its screening result (the record ``visits.ImageRecord`` reads back), and each DICOM
object made from it or for its visit."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from appliance.domain import QualityReport
from appliance.store import Tx
from appliance.visits import DerivedObject


def insert_quality(tx: Tx, capture_pk: int, report: QualityReport, now: str) -> None:
    """The quality gate's verdict on one photograph."""
    tx.insert(
        "quality_reports",
        {
            "capture_pk": capture_pk,
            "gradable": int(report.gradable),
            "score": float(report.score),
            "reasons": json.dumps(list(report.reasons)),
            "guidance": json.dumps(list(report.guidance)),
            "metrics": json.dumps({k: float(v) for k, v in report.metrics.items()}),
            "field_geometry": json.dumps(asdict(report.field_geometry))
            if report.field_geometry
            else None,
            "created_at": now,
        },
    )


def insert_result(tx: Tx, capture_pk: int, record: dict[str, Any], now: str) -> None:
    """The per-image screening record (``results.payload``, kind ``screening``)."""
    tx.insert(
        "results",
        {
            "capture_pk": capture_pk,
            "kind": "screening",
            "payload": json.dumps(record, default=_json_default),
            "created_at": now,
        },
    )


def insert_derived(tx: Tx, obj: DerivedObject, visit_key: str) -> None:
    """A DICOM object the appliance made, as a ``derived_objects`` row of ``visit_key``."""
    tx.insert("derived_objects", obj.row(visit_key))


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()  # numpy scalars
    raise TypeError(f"cannot store {type(value).__name__} as JSON")
