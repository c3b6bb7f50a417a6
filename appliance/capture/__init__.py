"""Capture stage: the three ways images arrive (C-STORE, hot folder, upload) and one ingest."""

from appliance.capture.decode import Limits, decode_rgb, examine, sniff
from appliance.capture.ingest import Incoming, Ingestor

__all__ = ["Incoming", "Ingestor", "Limits", "decode_rgb", "examine", "sniff"]
