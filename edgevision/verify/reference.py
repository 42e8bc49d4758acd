"""The PyTorch FP32 reference every variant is verified and benchmarked against: the recipe's
model behind the same export wrapper (and, for detection, the numpy reference NMS), run eagerly."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from edgevision.artifact import sha256_file
from edgevision.backends.base import RunnerBase, TensorSpec
from edgevision.errors import ModelSourceError, RecipeError
from edgevision.ops.nms import NMSParams, nms_reference
from edgevision.recipe import Recipe, parse_recipe
from edgevision.records import Manifest, VariantRecord
from edgevision.runtime.predictor import Predictor
from edgevision.tasks import DETECTION_TASKS


REFERENCE = VariantRecord("pytorch-fp32", "torch", "fp32", status="reference")


class TorchRunner(RunnerBase):
    """The export wrapper run eagerly, with the artifacts' feeds and output names."""

    def __init__(self, module: torch.nn.Module, input_names: Sequence[str], output_names: Sequence[str],
                 post: Optional[Callable[[Dict[str, np.ndarray]], Dict[str, np.ndarray]]] = None) -> None:
        """`post` maps the module's outputs to the graph contract (detection: the reference NMS)."""
        self._module = module.eval()
        self._post = post
        self.inputs: List[TensorSpec] = [TensorSpec(n, ("batch",), "float32") for n in input_names]
        self.outputs: List[TensorSpec] = [TensorSpec(n, (), "") for n in output_names]

    @torch.inference_mode()
    def infer(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        out = self._module(*(torch.from_numpy(np.ascontiguousarray(feeds[spec.name])) for spec in self.inputs))
        out = out if isinstance(out, (tuple, list)) else (out,)
        result = {spec.name: t.numpy() for spec, t in zip(self.outputs, out)}
        return self._post(result) if self._post else result


def reference(recipe: Recipe) -> tuple[Any, Optional[NMSParams], Any]:
    """The PyTorch FP32 reference of a recipe (labels resolved, checkpoint present): the export
    wrapper, the detector's NMS parameters, and a runner with the same outputs as the artifacts."""
    from edgevision.export.onnx_export import ExportWrapper
    from edgevision.models.sources import build_model

    model = build_model(recipe.model)
    core, nms = detection_core(model, recipe) if recipe.task in DETECTION_TASKS else (model, None)
    wrapper = ExportWrapper(core, recipe.task, recipe.input.layout, recipe.export.argmax)
    post = (lambda out: nms_reference(out["boxes"], out["scores"], nms)) if wrapper.appends_nms else None
    return wrapper, nms, TorchRunner(wrapper, wrapper.input_names, wrapper.output_names, post=post)


def reference_predictor(manifest: Manifest, threads: Optional[int] = None) -> Predictor:
    """The PyTorch FP32 model an artifact was compiled from, as a Predictor (the benchmark's
    baseline). Raises ModelSourceError if its checkpoint is gone or changed since the compile."""
    recipe = parse_recipe(manifest.recipe["content"], source="manifest.json recipe")
    model = manifest.model
    ckpt = recipe.model.checkpoint
    if ckpt is not None:
        if not ckpt.is_file():
            raise ModelSourceError(f"checkpoint {ckpt} not found (relative paths are resolved against the working "
                                   "directory: run from where the artifact was compiled)")
        if model.get("checkpoint_sha256") and sha256_file(ckpt) != model["checkpoint_sha256"]:
            raise ModelSourceError(f"checkpoint {ckpt} changed since the artifact was compiled (sha256 differs); "
                                   "recompile, or the baseline would not be the model the artifact came from")
    if threads:
        torch.set_num_threads(threads)
    _, _, runner = reference(recipe)
    return Predictor(manifest.info, runner, REFERENCE)


def detection_core(model: Any, recipe: Recipe) -> tuple[Any, NMSParams]:
    """The export adapter of a detector and its NMS parameters (recipe overrides model defaults)."""
    from edgevision.export.detection import detection_adapter

    adapter = detection_adapter(model, recipe.input.size, recipe.task, recipe.export.proposals, recipe.export.end2end)
    overrides = recipe.export.nms.model_dump()
    if overrides["multi_label"] is None:
        del overrides["multi_label"]
    elif not hasattr(adapter, "multi_label"):
        raise RecipeError("export.nms.multi_label: only for Ultralytics models (torchvision's detectors always keep "
                          "every class above the threshold); remove it")
    try:
        return adapter, adapter.nms_params(**overrides)
    except ValueError as e:
        raise RecipeError(f"export.nms: {e}") from None
