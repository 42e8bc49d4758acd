"""Model sources (torchvision builders, Ultralytics, timm, module:factory, checkpoints) and
edgevision's own models. Import the modules (sources.build_model, ...): importing the package
imports nothing, so the recipe can ask models.external about a source without loading PyTorch."""
