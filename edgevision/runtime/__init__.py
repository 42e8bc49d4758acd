"""The torch-free runtime: load an artifact, predict with numpy pre/post-processing."""

from edgevision.runtime.predictor import Predictor, load
from edgevision.runtime.results import Classification, Detections, Segmentation

__all__ = ["Classification", "Detections", "Predictor", "Segmentation", "load"]
