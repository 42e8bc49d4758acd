"""The torch-free runtime: load an artifact, predict with numpy pre/post-processing."""

from edgevision.runtime.predictor import Predictor, load
from edgevision.runtime.results import Classification, Segmentation

__all__ = ["Classification", "Predictor", "Segmentation", "load"]
