"""Quality gate: pure numpy/OpenCV gradability measurements → QualityReport with reasons."""

from appliance.quality.gate import METRIC_KEYS, QualityThresholds, assess
from appliance.quality.guidance import GUIDANCE, REASON_ORDER

__all__ = ["GUIDANCE", "METRIC_KEYS", "REASON_ORDER", "QualityThresholds", "assess"]
