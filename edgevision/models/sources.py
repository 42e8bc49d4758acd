"""Resolve a recipe's model source to a torch.nn.Module, and load its checkpoint.

Sources, in lookup order:
  1. edgevision's own models by name (unet, segnet, yolo);
  2. torchvision builders by name, always with weights=None (no downloads);
  3. Ultralytics ('ultralytics', 'ultralytics:<model>.yaml') and timm ('timm:<name>'): models/external.py;
  4. 'package.module:factory' for the user's own code.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from typing import TYPE_CHECKING, Any, Callable

from torch import nn

from edgevision.errors import ModelSourceError
from edgevision.models.checkpoints import load_state

if TYPE_CHECKING:
    from edgevision.recipe import ModelSpec

_OWN: dict[str, str] = {
    "unet": "edgevision.models.unet:unet",
    "segnet": "edgevision.models.segnet:segnet",
    "yolo": "edgevision.models.yolo:yolo",
}


def _torchvision_builders() -> list[str]:
    import torchvision

    return list(torchvision.models.list_models())


def _import_factory(ref: str) -> Callable[..., nn.Module]:
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise ModelSourceError(f"model.source '{ref}': expected 'package.module:factory'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ModelSourceError(f"model.source '{ref}': cannot import module '{module_name}': {e}") from None
    factory = getattr(module, attr, None)
    if factory is None or not callable(factory):
        raise ModelSourceError(f"model.source '{ref}': module '{module_name}' has no callable '{attr}'")
    return factory


def resolve_factory(source: str) -> tuple[Callable[..., nn.Module], dict[str, Any]]:
    """Return the builder for a source and the keyword arguments edgevision adds itself."""
    if source in _OWN:
        return _import_factory(_OWN[source]), {}
    if ":" in source:
        return _import_factory(source), {}
    import torchvision

    builders = _torchvision_builders()
    if source not in builders:
        close = difflib.get_close_matches(source, builders + list(_OWN), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ModelSourceError(
            f"model.source '{source}' is not an edgevision model ({', '.join(_OWN)}) nor a torchvision "
            f"builder{hint} (use 'package.module:factory' for your own code)"
        )
    builder = torchvision.models.get_model_builder(source)
    extra: dict[str, Any] = {"weights": None}
    if "weights_backbone" in inspect.signature(builder).parameters:
        extra["weights_backbone"] = None  # pretrained weights cannot be downloaded, and must not be
    return builder, extra


def build_model(spec: "ModelSpec", load_checkpoint: bool = True) -> nn.Module:
    """Instantiate the model of a recipe (eval mode), with its checkpoint when one is given."""
    from edgevision.models import external

    if external.is_ultralytics(spec.source):
        return external.build_ultralytics(spec, load_checkpoint)
    if spec.source.startswith(external.TIMM):
        model = external.build_timm(spec.source, spec.classes, spec.kwargs)
        if load_checkpoint and spec.checkpoint is not None:
            load_state(model, spec.checkpoint)
        return model.eval()
    factory, extra = resolve_factory(spec.source)
    kwargs = {**extra, **spec.kwargs}
    if spec.classes is not None:
        kwargs.setdefault("num_classes", spec.classes)
    try:
        model = factory(**kwargs)
    except TypeError as e:
        raise ModelSourceError(f"model.source '{spec.source}': cannot build with kwargs {sorted(kwargs)}: {e}") from None
    if not isinstance(model, nn.Module):
        raise ModelSourceError(f"model.source '{spec.source}' returned {type(model).__name__}, not a torch.nn.Module")
    if load_checkpoint and spec.checkpoint is not None:
        load_state(model, spec.checkpoint)
    return model.eval()
