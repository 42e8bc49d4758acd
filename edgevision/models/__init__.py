"""Model sources (torchvision builders, module:factory, checkpoints) and edgevision's own models."""

from edgevision.models.sources import build_model

__all__ = ["build_model"]
