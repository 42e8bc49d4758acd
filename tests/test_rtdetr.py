"""RT-DETR (Ultralytics' rtdetr-l) as a recipe source: a set predictor without NMS, its selection in the graph,
against Ultralytics' own RTDETRPredictor post-processing on the same tensor, on every backend that runs here."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import matplotlib
import numpy as np
import pytest
import sklearn.datasets
import torch

import edgevision
from edgevision import api
from edgevision.errors import RecipeError
from edgevision.models import external
from edgevision.models.sources import build_model
from edgevision.ops.nms import box_iou
from edgevision.random_weights import reestimated_checkpoint
from edgevision.recipe import parse_recipe
from edgevision.runtime.images import read_image
from conftest import Quiet

external._import("ultralytics", "ultralytics")
LABELS = ["circle", "square", "triangle"]
SIZE = 320
VARIANTS = ("onnxruntime-fp32", "openvino-fp32", "tensorrt-fp32")
SCORE_TOL = 5e-3


def _recipe(root: Path, **extra: Any) -> dict[str, Any]:
    return {"name": "rtdetr", "model": {"source": "ultralytics:rtdetr-l.yaml", "labels": LABELS},
            "input": {"size": SIZE}, "data": {"val": {"source": "shapes", "count": 6, "seed": 1}},
            "targets": [{"backend": b, "precision": "fp32"} for b in ("onnxruntime", "openvino", "tensorrt")],
            "verify": {"images": 4, "timing_rounds": 0}, "output": str(root / "rtdetr"), **extra}


@pytest.fixture(scope="module")
def rtdetr(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("rtdetr")
    data = _recipe(root)
    data["model"]["checkpoint"] = str(reestimated_checkpoint(parse_recipe(data).model_dump(mode="json"),
                                                             root / "rtdetr.pt"))
    recipe = parse_recipe(data)
    assert recipe.task == "detection" and recipe.input.resize == "stretch"  # RTDETRPredictor's scale_fill
    manifest = api.compile(recipe, reporter=Quiet(), threads=2)
    return build_model(recipe.model), root / "rtdetr", manifest


def _photos() -> list[np.ndarray]:
    return [read_image(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"),
            *sklearn.datasets.load_sample_images().images]


def ultralytics_rtdetr(model: Any, images: torch.Tensor, conf: float = 0.25) -> list[dict[str, np.ndarray]]:
    """Ultralytics' own RTDETRPredictor.postprocess on the model's output for `images`, boxes in network
    pixels (an 'original image' of the network's size)."""
    from ultralytics.models.rtdetr.predict import RTDETRPredictor

    predictor = RTDETRPredictor(overrides={"conf": conf, "max_det": 300, "verbose": False})
    predictor.batch = ([None] * len(images),)
    predictor.model = SimpleNamespace(names=dict(enumerate(LABELS)))
    with torch.no_grad():
        raw = model(images)
    h, w = images.shape[-2:]
    results = predictor.postprocess(raw, images, [np.zeros((h, w, 3), np.uint8)] * len(images))
    return [{"boxes": r.boxes.xyxy.numpy(), "scores": r.boxes.conf.numpy(), "labels": r.boxes.cls.numpy().astype(int)}
            for r in results]


def test_compiles_as_a_set_predictor(rtdetr: tuple[Any, Path, dict[str, Any]]) -> None:
    manifest = rtdetr[2]
    assert manifest["export"]["head"].startswith("set prediction")
    ops = manifest["export"]["ops"]
    assert "NonMaxSuppression" not in ops and ops.get("TopK", 0) >= 2 and ops.get("GridSample", 0) >= 1, ops
    assert {v["name"]: v["status"] for v in manifest["variants"]} == dict.fromkeys(VARIANTS, "passed")


@pytest.mark.parametrize("variant", VARIANTS[:2])  # the TensorRT graph: CPU emulation in the compile (above)
def test_matches_ultralytics_own_prediction(rtdetr: tuple[Any, Path, dict[str, Any]], variant: str) -> None:
    """Every detection of Ultralytics' predictor is ours (same class, IoU > 0.99) with its score within
    SCORE_TOL. Random RT-DETR weights amplify float noise: measured, input noise of 1e-6 moves its scores
    by 1.3e-4 (the spread class head multiplies query embeddings that barely differ), and ONNX Runtime's
    and OpenVINO's scores differ from PyTorch's by up to 2.4e-3 (2e-4 on most images)."""
    model, artifact, _ = rtdetr
    predictor = edgevision.load(artifact, variant)
    feeds, _ = predictor.feeds(_photos())
    ours = predictor.runner.infer(feeds)
    theirs = ultralytics_rtdetr(model, torch.from_numpy(feeds[predictor.input_name]))
    total = 0
    for i, ref in enumerate(theirs):
        n = int(ours["num_dets"][i, 0])
        total += len(ref["boxes"])
        near = int((np.abs(ref["scores"] - 0.25) <= SCORE_TOL).sum() + (np.abs(ours["scores"][i, :n] - 0.25) <= SCORE_TOL).sum())
        assert abs(n - len(ref["boxes"])) <= near  # counts differ only by detections at the threshold
        sure = ref["scores"] > 0.25 + SCORE_TOL
        iou = box_iou(ref["boxes"][sure], ours["boxes"][i, :n]) * (ref["labels"][sure][:, None] == ours["labels"][i, :n][None])
        gap = np.where(iou > 0.99, np.abs(ref["scores"][sure][:, None] - ours["scores"][i, :n][None]), np.inf)
        assert (gap.min(axis=1, initial=np.inf) <= SCORE_TOL).all()
    assert total >= 30 and len({int(v) for r in theirs for v in r["labels"]}) >= 2  # something to compare


@pytest.mark.parametrize("nms", [{"iou_threshold": 0.5}, {"multi_label": True}])
def test_nms_fields_are_refused(tmp_path: Path, nms: dict[str, Any]) -> None:
    data = _recipe(tmp_path, export={"nms": nms})
    with pytest.raises(RecipeError, match=f"{next(iter(nms))}: RT-DETR predicts a set of boxes without an NMS"):
        api.compile(parse_recipe(data), reporter=Quiet(), threads=2)
