"""What a processed image writes, row by row, inside the caller's transaction."""

from __future__ import annotations

from appliance.store import Tx
from appliance.visits import DerivedObject


def insert_derived(tx: Tx, obj: DerivedObject, visit_key: str) -> None:
    """A DICOM object the appliance made, as a ``derived_objects`` row of ``visit_key``."""
    tx.insert("derived_objects", obj.row(visit_key))
