"""Models trained elsewhere: Ultralytics YOLO (classify, detect, segment, pose, semantic, OBB), RT-DETR and timm
classifiers.

Sources (recipe `model.source`):
  ultralytics               + model.checkpoint: an Ultralytics checkpoint (best.pt). It is a
                              pickle, so loading it runs code: it needs model.trust_checkpoint: true.
  ultralytics:<model.yaml>  an Ultralytics model YAML (yolov8n.yaml, yolo11n-seg.yaml, a path) with
                              random weights; model.checkpoint, if given, is a plain state_dict
                              (loaded with weights_only=True).
  timm:<name>               a timm model by name, random weights (pretrained=False: no downloads).

`recipe_defaults` gives what the source records (input size, normalisation, labels): the recipe
fills its missing fields from it, so a recipe needs no `input` section for these sources.
Both packages are optional extras; a missing one is a clear error naming the extra.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

from edgevision.errors import ModelSourceError

ULTRALYTICS = "ultralytics"
TIMM = "timm:"
ULTRALYTICS_TASKS = {"classify": "classification", "detect": "detection", "segment": "instance_segmentation",
                     "pose": "keypoints", "semantic": "segmentation", "obb": "oriented_detection"}


def is_ultralytics(source: str) -> bool:
    return source == ULTRALYTICS or source.startswith(ULTRALYTICS + ":")


def is_external(source: str) -> bool:
    return is_ultralytics(source) or source.startswith(TIMM)


def _import(package: str, extra: str) -> Any:
    if package == "ultralytics":  # quiet, and never reaching for the network (settings, downloads, auto-installs)
        os.environ.setdefault("YOLO_VERBOSE", "False")
        os.environ.setdefault("YOLO_OFFLINE", "True")
        os.environ.setdefault("YOLO_AUTOINSTALL", "False")
    try:
        if package == "ultralytics":
            return _import_ultralytics()
        return __import__(package)
    except ImportError as e:
        raise ModelSourceError(f"model.source needs the Python package '{package}', which is not installed ({e}); "
                               f"install it with: pip install 'edgevision[{extra}]'") from None


def _import_ultralytics() -> Any:
    """Import Ultralytics, then undo the process-wide patch it applies on import: its
    utils/patches.py replaces PIL's Image.open with one that, on an unreadable file, tries to
    pip-install a HEIF plug-in (or raises ModuleNotFoundError), which breaks every other image
    reader's error handling in the process (edgevision's predict included). Whoever imported it
    first, the original is the one that module kept (`_image_open`)."""
    import sys

    module = __import__("ultralytics")
    import ultralytics.nn.tasks  # noqa: F401  (what imports the patches)

    patches, pil = sys.modules.get("ultralytics.utils.patches"), sys.modules.get("PIL.Image")
    original = getattr(patches, "_image_open", None)
    if pil is not None and original is not None and pil.open is getattr(patches, "image_open", None):
        pil.open = original
    return module


# ---- timm ------------------------------------------------------------------------------------

def _timm_name(source: str) -> str:
    timm = _import("timm", "timm")
    name = source[len(TIMM):]
    if not timm.is_model(name):
        import difflib

        close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ModelSourceError(f"model.source '{source}': timm has no model '{name}'{hint}")
    return name


def build_timm(source: str, num_classes: Optional[int], kwargs: dict[str, Any]) -> Any:
    timm = _import("timm", "timm")
    extra = {} if num_classes is None else {"num_classes": num_classes}
    try:
        return timm.create_model(_timm_name(source), pretrained=False, **{**extra, **kwargs})
    except (TypeError, ValueError, AssertionError) as e:
        raise ModelSourceError(f"model.source '{source}': cannot build with kwargs {sorted({**extra, **kwargs})}: {e}") from None


def _timm_defaults(source: str) -> dict[str, Any]:
    """timm's pre-processing defaults for the model (its pretrained config): size, mean, std."""
    timm = _import("timm", "timm")
    cfg = timm.models.get_pretrained_cfg(_timm_name(source))
    if cfg is None:
        return {}
    _, h, w = cfg.input_size
    return {"input": {"size": [h, w], "mean": list(cfg.mean), "std": list(cfg.std)}}


# ---- Ultralytics -----------------------------------------------------------------------------

def _yaml_of(source: str) -> Optional[str]:
    return source.partition(":")[2] or None


@lru_cache(maxsize=4)
def _read_checkpoint(path: str, mtime: float) -> tuple[Any, dict[str, Any]]:
    """An Ultralytics checkpoint's model (FP32, eval) and its other entries (train_args, ...)."""
    _import("ultralytics", "ultralytics")
    from ultralytics.nn.tasks import load_checkpoint

    try:
        model, ckpt = load_checkpoint(path)
    except Exception as e:  # pickle, zip, missing classes, not an Ultralytics checkpoint
        raise ModelSourceError(f"model.checkpoint {path}: not a readable Ultralytics checkpoint: "
                               f"{type(e).__name__}: {str(e).strip()[:300]}") from None
    return model, {k: v for k, v in ckpt.items() if k not in ("model", "ema", "optimizer")}


def _checkpoint(spec: Any) -> tuple[Any, dict[str, Any]]:
    """The Ultralytics checkpoint of a validated model section (recipe.ModelSpec): read only with
    trust_checkpoint True, a bool the recipe validated (never a string such as "false")."""
    if spec.checkpoint is None:
        raise ModelSourceError("model.source 'ultralytics' needs model.checkpoint (a .pt file from Ultralytics "
                               "training), or use 'ultralytics:<model>.yaml' for an architecture with random weights")
    path = Path(spec.checkpoint)
    if not path.is_file():
        raise ModelSourceError(f"model.checkpoint: file not found: {path}")
    if spec.trust_checkpoint is not True:
        raise ModelSourceError(
            f"model.checkpoint {path}: an Ultralytics checkpoint is a pickle, and loading one runs code from the "
            "file. If you trust where it came from, set model.trust_checkpoint: true")
    return _read_checkpoint(str(path.resolve()), path.stat().st_mtime)


def _yaml_dict(config: str) -> dict[str, Any]:
    _import("ultralytics", "ultralytics")
    from ultralytics.nn.tasks import yaml_model_load

    try:
        cfg = yaml_model_load(config)
    except Exception as e:  # file not found, YAML errors
        raise ModelSourceError(f"model.source 'ultralytics:{config}': cannot read the model YAML: "
                               f"{type(e).__name__}: {str(e).strip()[:300]}") from None
    if not isinstance(cfg, dict) or not all(isinstance(cfg.get(k), list) for k in ("backbone", "head")):
        raise ModelSourceError(f"model.source 'ultralytics:{config}': not an Ultralytics model YAML (it needs 'backbone' "
                               "and 'head' lists of layers, as in yolov8n.yaml)")
    return cfg


def _task_of(model: Any, source: str) -> str:
    from ultralytics.nn.tasks import guess_model_task

    try:
        task = getattr(model, "task", None) or ("detect" if _is_rtdetr(model) else guess_model_task(model))
    except Exception:  # Ultralytics raises or warns on heads it does not know
        task = None
    if task not in ULTRALYTICS_TASKS:
        head = model.get("head", [[None]])[-1] if isinstance(model, dict) else getattr(model, "model", [None])[-1]
        kind = f"an Ultralytics '{task}' model" if task else (
            f"an Ultralytics model whose head ({head[2] if isinstance(head, list) and len(head) > 2 else type(head).__name__}) "
            "edgevision does not know")
        raise ModelSourceError(f"model.source '{source}': {kind}; edgevision compiles Ultralytics "
                               f"{', '.join(ULTRALYTICS_TASKS)} models")
    return ULTRALYTICS_TASKS[task]


def build_ultralytics(spec: Any, load_checkpoint: bool = True) -> Any:
    """The Ultralytics model of a recipe (FP32, eval, not fused: BatchNorm stays re-estimable)."""
    _import("ultralytics", "ultralytics")  # first: Ultralytics' import-time patches are undone there
    config = _yaml_of(spec.source)
    if config is None:
        import copy

        model = copy.deepcopy(_checkpoint(spec)[0])  # the cached one stays as read
    else:
        from ultralytics.nn.tasks import (ClassificationModel, DetectionModel, OBBModel, PoseModel,
                                          RTDETRDetectionModel, SegmentationModel, SemanticSegmentationModel)

        cfg = _yaml_dict(config)
        kind = {"classification": ClassificationModel, "detection": DetectionModel, "instance_segmentation":
                SegmentationModel, "keypoints": PoseModel, "segmentation": SemanticSegmentationModel,
                "oriented_detection": OBBModel}[_task_of(cfg, spec.source)]
        kind = RTDETRDetectionModel if _is_rtdetr(cfg) else kind
        nc = spec.classes if spec.classes is not None else cfg.get("nc")
        try:
            model = kind(cfg, nc=nc, verbose=False, **spec.kwargs)
        except TypeError as e:
            raise ModelSourceError(f"model.source '{spec.source}': cannot build with kwargs {sorted(spec.kwargs)}: {e}") from None
        if load_checkpoint and spec.checkpoint is not None:
            from edgevision.models.checkpoints import load_state

            load_state(model, spec.checkpoint)
    for m in model.modules():  # Ultralytics' export does the same: no in-place ops in the traced graph
        if hasattr(m, "inplace"):
            m.inplace = False
    return model.float().eval()


def _is_rtdetr(model: Any) -> bool:
    """Whether a model YAML (dict) or an Ultralytics model ends in RT-DETR's decoder head."""
    head = model["head"][-1] if isinstance(model, dict) else model.model[-1]
    return (head[2] if isinstance(head, list) else type(head).__name__) == "RTDETRDecoder"


def _ultralytics_defaults(spec: Any) -> dict[str, Any]:
    config = _yaml_of(spec.source)
    if config is None:
        net, ckpt = _checkpoint(spec)
        task = _task_of(net, spec.source)
        size = (ckpt.get("train_args") or {}).get("imgsz", 224 if task == "classification" else 640)
        names = getattr(net, "names", None) or {}
        out: dict[str, Any] = {"labels": [str(names[i]) for i in sorted(names)]} if names else {}
    else:
        net, out = _yaml_dict(config), {}
        task = _task_of(net, spec.source)
        size = 224 if task == "classification" else 640  # Ultralytics' default imgsz per task
        if net.get("names"):
            out["labels"] = [str(n) for n in (net["names"].values() if isinstance(net["names"], dict) else net["names"])]
        elif net.get("nc"):
            out["num_classes"] = int(net["nc"])
    size = [size, size] if isinstance(size, int) else list(size)
    # Ultralytics' pre-processing: RGB / 255; detectors letterbox (padded with 114); classifiers take
    # classify_transforms (a square input: the shorter side resized, the centre cropped; else stretched);
    # RT-DETR's predictor stretches the image to the input (scale_fill)
    if task == "classification":
        resize = "center_crop" if size[0] == size[1] else "stretch"
    else:
        resize = "stretch" if _is_rtdetr(net) else "letterbox"
    out["input"] = {"size": size, "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0], "channel_order": "rgb",
                    "resize": resize, "pad_value": 114}
    out["task"] = task
    return out


def recipe_defaults(spec: Any) -> dict[str, Any]:
    """What the source of a validated model section (recipe.ModelSpec) records: {"input": {...},
    "labels": [...] | "num_classes": n, "task": ...} (only what it knows)."""
    return _timm_defaults(spec.source) if spec.source.startswith(TIMM) else _ultralytics_defaults(spec)


def fill_recipe(data: dict[str, Any], spec: Any, task: Optional[str]) -> dict[str, Any]:
    """A recipe (raw, every section but input already validated: `spec` is its model section, `task`
    its task or None) with what its ultralytics / timm source records filled in where the recipe is
    silent (input, labels or num_classes, task); the recipe's own values win. Raises ValueError when
    its task contradicts the model's."""
    if not is_external(spec.source) or (data.get("input") is not None and not isinstance(data["input"], dict)):
        return data  # validation says what is wrong with the input
    given = data.get("input") or {}
    known = ("size", "mean", "std") if spec.source.startswith(TIMM) else ("size", "mean", "std", "resize")
    if all(k in given for k in known) and spec.classes is not None and task is not None:
        return data  # complete (e.g. a manifest's recipe): the source is not read again
    facts = recipe_defaults(spec)
    if facts.get("task") not in (None, task) and task is not None:
        raise ValueError(f"model.source '{spec.source}' is a {facts['task']} model; set task: {facts['task']}")
    task = task or facts.get("task")
    filled = {k: v for k, v in facts.items() if k in ("labels", "num_classes") and spec.classes is None}
    out = {**data, "model": {**data["model"], **filled}, "input": {**facts.get("input", {}), **given}}
    return {**out, "task": task} if task is not None else out
