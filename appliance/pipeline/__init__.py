"""The one place that wires the stages: capture → quality → inference → outcome → store.

Stages never import each other; this package moves their records between them.
``image`` runs the stages on one photograph, ``visit`` turns a visit's findings into an
outcome, ``worker`` does both for stored captures, crash-safe by capture status; what a visit
then owes (SR, PDF, heatmap SC) is recorded in ``due`` with the outcome and built by ``issue``.
"""

from appliance.pipeline.image import NO_MODEL, ImageAnalysis, analyse, image_json, quality_json
from appliance.pipeline.visit import outcome_json, visit_outcome
from appliance.pipeline.worker import Pipeline

__all__ = [
    "NO_MODEL",
    "ImageAnalysis",
    "Pipeline",
    "analyse",
    "image_json",
    "outcome_json",
    "quality_json",
    "visit_outcome",
]
