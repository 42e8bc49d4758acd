"""Ultralytics YOLO (detect, segment, pose) and timm models as recipe sources, against their own
libraries: edgevision's artifacts on ONNX Runtime and OpenVINO vs Ultralytics' own prediction
(its non_max_suppression and process_mask) and vs timm eager, on the same network input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pytest
import torch

import edgevision
from edgevision import api
from edgevision.errors import ModelSourceError, RecipeError
from edgevision.models import external
from edgevision.random_weights import reestimated_checkpoint
from edgevision.models.sources import build_model
from edgevision.ops.nms import box_iou
from edgevision.recipe import parse_recipe
from edgevision.runtime.images import read_image
from edgevision.runtime.instances import ProtoMasks
from conftest import Quiet
from oracles import ultralytics_reference

external._import("ultralytics", "ultralytics")  # as a compile does: Ultralytics' patch of PIL undone
PHOTO = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
LABELS = ["circle", "square", "triangle"]
TASKS = {"detect": ("detection", "yolov8n.yaml"), "seg": ("instance_segmentation", "yolo11n-seg.yaml"),
         "pose": ("keypoints", "yolov8n-pose.yaml")}


def yolo_recipe(name: str, config: str, out: Path, **extra: Any) -> dict[str, Any]:
    return {"name": name, "model": {"source": f"ultralytics:{config}", "labels": LABELS},
            "input": {"size": 320}, "export": {"dynamic_batch": True},
            "data": {"val": {"source": "shapes", "count": 6, "seed": 1}},
            "targets": [{"backend": "onnxruntime", "precision": "fp32"}, {"backend": "openvino", "precision": "fp32"}],
            "verify": {"images": 4, "timing_rounds": 0}, "output": str(out / name), **extra}


@pytest.fixture(scope="module")
def yolo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Any, Path]]:
    """kind -> (the Ultralytics model, artifact dir): random weights, BatchNorm re-estimated, the
    class head spread so that scores are not all ties (random_weights.spread_class_logits)."""
    root, out = tmp_path_factory.mktemp("yolo"), {}
    for kind, (task, config) in TASKS.items():
        data = yolo_recipe(f"yolo-{kind}", config, root)
        data["model"]["checkpoint"] = str(reestimated_checkpoint(parse_recipe(data).model_dump(mode="json"),
                                                                 root / f"{kind}.pt"))
        recipe = parse_recipe(data)
        assert recipe.task == task  # taken from the model YAML
        api.compile(recipe, reporter=Quiet(), threads=2)
        out[kind] = (build_model(recipe.model), root / data["name"])
    return out


def _inputs(predictor: Any) -> tuple[dict[str, np.ndarray], list[Any]]:
    from edgevision.data.shapes import ShapesDataset

    shapes = [ShapesDataset(2, seed=3, size=(320, 320))[i].image for i in range(2)]
    return predictor.feeds([read_image(PHOTO), *shapes])


@pytest.mark.parametrize("kind", list(TASKS))
@pytest.mark.parametrize("variant", ["onnxruntime-fp32", "openvino-fp32"])
def test_matches_ultralytics_own_prediction(yolo: dict[str, tuple[Any, Path]], kind: str, variant: str) -> None:
    model, artifact = yolo[kind]
    predictor = edgevision.load(artifact, variant)
    feeds, _ = _inputs(predictor)
    ours = predictor.runner.infer(feeds)
    theirs = ultralytics_reference(model, torch.from_numpy(feeds[predictor.input_name]))
    total = matched = 0
    for i, ref in enumerate(theirs):
        n = int(ours["num_dets"][i, 0])
        boxes, scores, labels = ours["boxes"][i, :n], ours["scores"][i, :n], ours["labels"][i, :n]
        total += len(ref["boxes"])
        assert n == len(ref["boxes"])
        if not n:
            continue
        iou = box_iou(ref["boxes"], boxes) * (ref["labels"][:, None] == labels[None])
        pair = iou.argmax(axis=1)
        ok = iou[np.arange(len(pair)), pair] > 0.99
        matched += int(ok.sum())
        assert np.abs(ref["scores"][ok] - scores[pair[ok]]).max() <= 1e-4
        if kind == "pose":
            dist = np.linalg.norm(ref["keypoints"][ok][..., :2] - ours["keypoints"][i, pair[ok]][..., :2], axis=-1)
            assert dist.max() <= 0.5
            assert np.abs(ref["keypoints"][ok][..., 2] - ours["keypoints"][i, pair[ok]][..., 2]).max() <= 1e-3
        if kind == "seg":
            masks = ProtoMasks(ours["mask_coefficients"][i, pair[ok]], ours["protos"][i], boxes[pair[ok]],
                               predictor.input.size, None).network()  # type: ignore[arg-type]
            inter, union = (masks & ref["masks"][ok]).sum(axis=(1, 2)), (masks | ref["masks"][ok]).sum(axis=(1, 2))
            assert union.min() > 0 and (inter / union).min() >= 0.98
    assert total >= 10 and len({int(v) for r in theirs for v in r["labels"]}) >= 2  # a comparison with something in it
    assert matched / total >= 0.99


def test_predict_gives_original_pixels_masks_and_keypoints(yolo: dict[str, tuple[Any, Path]]) -> None:
    photo = read_image(PHOTO)
    for kind in ("seg", "pose"):
        dets = edgevision.load(yolo[kind][1], "onnxruntime-fp32").predict(photo)
        assert len(dets) > 0
        if kind == "seg":
            assert dets.masks.shape == (len(dets), *photo.shape[:2]) and dets.masks.any(axis=(1, 2)).all()
            x0, y0, x1, y1 = dets.boxes[0]
            ys, xs = np.nonzero(dets.masks[0])
            assert xs.min() >= x0 - 2 and xs.max() <= x1 + 2 and ys.min() >= y0 - 2 and ys.max() <= y1 + 2
            assert len(dets[:2].rle()) == 2
        else:
            assert dets.keypoints.shape == (len(dets), 17, 3) and dets.keypoint_scores.shape == (len(dets), 17)
            assert ((dets.keypoint_scores >= 0) & (dets.keypoint_scores <= 1)).all()


def test_a_pickled_checkpoint_needs_trust(tmp_path: Path) -> None:
    from ultralytics.nn.tasks import DetectionModel

    ckpt = tmp_path / "best.pt"
    torch.save({"model": DetectionModel("yolov8n.yaml", nc=3, verbose=False), "train_args": {"imgsz": 256}}, ckpt)
    data = {"name": "y", "model": {"source": "ultralytics", "checkpoint": str(ckpt)},
            "targets": [{"backend": "onnxruntime", "precision": "fp32"}]}
    with pytest.raises(ModelSourceError, match="trust_checkpoint: true"):
        parse_recipe(data)
    recipe = parse_recipe({**data, "model": {**data["model"], "trust_checkpoint": True}})
    from PIL import Image

    assert Image.open.__module__.startswith("PIL")  # Ultralytics' process-wide patch of it is undone
    assert recipe.task == "detection" and recipe.input.size == (256, 256) and recipe.input.resize == "letterbox"
    assert recipe.model.labels == ["0", "1", "2"]  # the checkpoint's names
    with pytest.raises(RecipeError, match="set task: detection"):
        parse_recipe({**data, "task": "keypoints", "model": {**data["model"], "trust_checkpoint": True}})


@pytest.mark.parametrize("name", ["resnet10t", "deit_tiny_patch16_224"])
def test_timm_against_timm_eager(tmp_path: Path, name: str) -> None:
    import timm

    data = {"name": name, "task": "classification", "model": {"source": f"timm:{name}", "labels": LABELS},
            "data": {"val": {"source": "shapes", "count": 4, "seed": 1, "max_objects": 1}},
            "targets": [{"backend": "onnxruntime", "precision": "fp32"}, {"backend": "openvino", "precision": "fp32"}],
            "verify": {"images": 4, "timing_rounds": 0}, "output": str(tmp_path / name)}
    cfg = timm.models.get_pretrained_cfg(name)
    recipe = parse_recipe(data)
    assert recipe.input.size == tuple(cfg.input_size[1:]) and recipe.input.mean == tuple(cfg.mean)
    data["model"]["checkpoint"] = str(reestimated_checkpoint(recipe.model_dump(mode="json"), tmp_path / "w.pt"))
    api.compile(parse_recipe(data), reporter=Quiet(), threads=2)
    model = build_model(parse_recipe(data).model)
    assert type(model).__module__.startswith("timm.")
    for variant in ("onnxruntime-fp32", "openvino-fp32"):
        predictor = edgevision.load(tmp_path / name, variant)
        feeds, _ = predictor.feeds([read_image(PHOTO)])
        with torch.no_grad():
            eager = model(torch.from_numpy(feeds[predictor.input_name])).numpy()
        logits = predictor.runner.infer(feeds)["logits"]
        assert eager.std() > 1e-3  # logits that differ between classes
        assert np.abs(logits - eager).max() <= 1e-3 * max(1.0, np.abs(eager).max())
        assert logits.argmax() == eager.argmax()


def test_missing_extra_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real = builtins.__import__

    def no_timm(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "timm":
            raise ImportError("No module named 'timm'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_timm)
    with pytest.raises(ModelSourceError, match=r"edgevision\[timm\]"):
        parse_recipe({"name": "t", "task": "classification", "model": {"source": "timm:resnet18", "num_classes": 3},
                      "targets": [{"backend": "onnxruntime", "precision": "fp32"}]})


def test_an_ultralytics_training_compiles_with_its_own_map(tmp_path: Path) -> None:
    """Ultralytics trains YOLOv8n briefly on shapes images written in its own format; edgevision
    compiles the best.pt it saves and scores the same validation images within 1 mAP point of
    Ultralytics' own validator (both: conf 0.001, IoU 0.7, every class above the threshold)."""
    from ultralytics import YOLO

    from yolo_data import write_yolo_dataset

    data = write_yolo_dataset(tmp_path / "data", 128, {"train": (480, 0), "val": (60, 1)})
    YOLO("yolov8n.yaml").train(data=str(data), epochs=8, imgsz=128, batch=16, device="cpu", workers=0, seed=0,
                               warmup_epochs=1, project=str(tmp_path), name="train", plots=False, amp=False, val=False)
    best = tmp_path / "train" / "weights" / "last.pt"  # val=False: no best.pt selection, the last epoch
    theirs = YOLO(str(best)).val(data=str(data), imgsz=128, batch=16, conf=0.001, iou=0.7, device="cpu", plots=False)
    recipe = parse_recipe({
        "name": "trained", "model": {"source": "ultralytics", "checkpoint": str(best), "trust_checkpoint": True},
        "export": {"nms": {"score_threshold": 0.001, "multi_label": True}},
        "data": {"val": {"source": "shapes", "count": 60, "seed": 1}},
        "targets": [{"backend": "onnxruntime", "precision": "fp32"}], "verify": {"images": 4, "timing_rounds": 0},
        "output": str(tmp_path / "trained")})
    assert recipe.input.size == (128, 128) and recipe.model.labels == ["circle", "square", "triangle"]
    manifest = api.compile(recipe, reporter=Quiet(), threads=2)
    ours = manifest["variants"][0]["accuracy"]["map"]
    print(f"mAP@[.5:.95] on 60 images: edgevision {ours:.4f}, Ultralytics val {float(theirs.box.map):.4f}")
    assert float(theirs.box.map) > 0.05  # it learned something: the comparison has something in it
    assert abs(ours - float(theirs.box.map)) <= 0.01, (ours, float(theirs.box.map))
