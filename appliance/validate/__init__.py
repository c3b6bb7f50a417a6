"""Validation harness: measure any screening model against a site's gold-standard labels.

Model-agnostic: give it a predictor (RGB uint8 image → dict of outputs, see
:mod:`appliance.validate.predictions`) and a labelled data set in one of :data:`FORMATS`.
The report's keys are stable and documented in ``appliance/validate/README.md``.

    rows = read_labels(dataset_dir, None, "messidor2")
    report = run_validation(dataset_dir, None, "messidor2", predictor, out, model_info=card)
"""

from appliance.validate.labels import FORMATS, Row, read_labels
from appliance.validate.report import compute_report
from appliance.validate.run import run_validation, write_report

__all__ = ["FORMATS", "Row", "compute_report", "read_labels", "run_validation", "write_report"]
