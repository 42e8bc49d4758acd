"""Model sources (torchvision builders, module:factory, checkpoints) and edgevision's own models."""

from edgevision.models.sources import build_model, list_own_models

__all__ = ["build_model", "list_own_models"]
