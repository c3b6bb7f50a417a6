"""Inference stage: model cards (hash-checked), onnxruntime sessions, pre/post-processing."""

from appliance.inference.card import DISCLAIMER, ModelCard, ModelIntegrityError, find_cards
from appliance.inference.screener import Screener

__all__ = ["DISCLAIMER", "ModelCard", "ModelIntegrityError", "Screener", "find_cards"]
