"""Ultralytics' dense heads as recipe sources: classifiers (YOLOv8-cls, YOLO26-cls), whose task, input size and
pre-processing (classify_transforms: the shorter side resized, the centre cropped) come from the model, and
YOLO26-sem (semantic segmentation). edgevision's artifacts on ONNX Runtime and OpenVINO give Ultralytics' own
probabilities and its own label maps at the original image size (its predictors' post-processing)."""

from __future__ import annotations

from pathlib import Path
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
from edgevision.random_weights import reestimated_checkpoint
from edgevision.recipe import parse_recipe
from edgevision.records import InputSpec
from edgevision.runtime.images import read_image
from edgevision.runtime.postprocess import softmax
from edgevision.runtime.preprocess import plan, preprocess
from conftest import Quiet

external._import("ultralytics", "ultralytics")
LABELS = ["circle", "square", "triangle"]
# YOLO26-cls is YOLO11-cls layer for layer in Ultralytics 8.4.190 (its YAML differs in comments only): v8 is the other backbone
MODELS = {"v8": "yolov8n-cls.yaml", "26": "yolo26n-cls.yaml"}
VARIANTS = ("onnxruntime-fp32", "openvino-fp32")


def _photos() -> list[np.ndarray]:
    """Real photographs of three shapes: portrait 512x600 and two landscape 640x427."""
    return [read_image(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"),
            *sklearn.datasets.load_sample_images().images]


@pytest.fixture(scope="module")
def classifiers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Any, Path]]:
    root, out = tmp_path_factory.mktemp("ycls"), {}
    for kind, config in MODELS.items():
        data = {"name": f"cls-{kind}", "model": {"source": f"ultralytics:{config}", "labels": LABELS},
                "data": {"val": {"source": "shapes", "count": 6, "seed": 1}},
                "targets": [{"backend": "onnxruntime", "precision": "fp32"}, {"backend": "openvino", "precision": "fp32"}],
                "verify": {"images": 4, "timing_rounds": 0}, "output": str(root / f"cls-{kind}")}
        data["model"]["checkpoint"] = str(reestimated_checkpoint(parse_recipe(data).model_dump(mode="json"),
                                                                 root / f"{kind}.pt"))
        recipe = parse_recipe(data)
        assert recipe.task == "classification" and recipe.input.size == (224, 224)  # from the model YAML
        assert recipe.input.resize == "center_crop" and recipe.input.mean == (0.0, 0.0, 0.0)
        manifest = api.compile(recipe, reporter=Quiet(), threads=2)
        assert {v["name"]: v["status"] for v in manifest["variants"]} == dict.fromkeys(VARIANTS, "passed")
        out[kind] = (build_model(recipe.model), root / data["name"])
    return out


@pytest.mark.parametrize(("kind", "variant"), [(k, v) for k in MODELS for v in VARIANTS])
def test_probabilities_are_ultralytics_own(classifiers: dict[str, tuple[Any, Path]], kind: str, variant: str) -> None:
    model, artifact = classifiers[kind]
    predictor = edgevision.load(artifact, variant)
    photos = _photos()
    feeds, _ = predictor.feeds(photos)
    ours = softmax(predictor.runner.infer(feeds)["logits"])
    with torch.no_grad():
        theirs = model(torch.from_numpy(feeds[predictor.input_name]))[0].numpy()  # the predictor's probs (preds[0])
    assert np.abs(ours - theirs).max() <= 1e-5
    assert (ours.argmax(1) == theirs.argmax(1)).all()
    # something to compare: each photo's best class leads by far more than the tolerance, and the photos'
    # probabilities differ from each other by far more (random weights rank the classes alike on every photo)
    top = np.sort(theirs, axis=1)
    assert (top[:, -1] - top[:, -2]).min() >= 1e-2 and np.ptp(theirs, axis=0).max() >= 1e-2
    for photo, probs in zip(photos, theirs):
        result = predictor.predict(photo, top_k=3)
        assert list(result.class_ids) == list(np.argsort(-probs)[:3])
        assert np.allclose(result.scores, np.sort(probs)[::-1][:3], atol=1e-5)


@pytest.fixture(scope="module")
def semantic(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    root = tmp_path_factory.mktemp("ysem")
    data = {"name": "sem", "model": {"source": "ultralytics:yolo26n-sem.yaml", "labels": ["background", *LABELS]},
            "input": {"size": 320}, "data": {"val": {"source": "shapes", "count": 6, "seed": 1}},
            "targets": [{"backend": "onnxruntime", "precision": "fp32"}, {"backend": "openvino", "precision": "fp32"}],
            "verify": {"images": 4, "timing_rounds": 0}, "output": str(root / "sem")}
    data["model"]["checkpoint"] = str(reestimated_checkpoint(parse_recipe(data).model_dump(mode="json"), root / "sem.pt"))
    recipe = parse_recipe(data)
    assert recipe.task == "segmentation" and recipe.input.resize == "letterbox"  # from the model YAML
    manifest = api.compile(recipe, reporter=Quiet(), threads=2)
    assert {v["name"]: v["status"] for v in manifest["variants"]} == dict.fromkeys(VARIANTS, "passed")
    return build_model(recipe.model), root / "sem"


@pytest.mark.parametrize("variant", VARIANTS)
def test_label_maps_are_ultralytics_own(semantic: tuple[Any, Path], variant: str) -> None:
    """predict() on real photos (three sizes, both orientations) against Ultralytics'
    SemanticSegmentationPredictor.postprocess of the model's output on the same network input (logits
    upsampled to the input, the letterbox removed, resized to the photo, argmax)."""
    from types import SimpleNamespace

    from ultralytics.models.yolo.semantic.predict import SemanticSegmentationPredictor

    model, artifact = semantic
    predictor = edgevision.load(artifact, variant)
    oracle = SemanticSegmentationPredictor(overrides={"verbose": False})
    oracle.model = SimpleNamespace(names=dict(enumerate(["background", *LABELS])))
    for photo in _photos():
        feeds, _ = predictor.feeds([photo])
        x = torch.from_numpy(feeds[predictor.input_name])
        oracle.batch = ([None],)
        with torch.no_grad():
            theirs = oracle.postprocess(model(x), x, [photo[..., ::-1]])[0].semantic_mask.data.numpy()
        ours = predictor.predict(photo).label_map
        assert ours.shape == theirs.shape == photo.shape[:2]
        classes, counts = np.unique(theirs, return_counts=True)
        assert (counts >= 0.01 * theirs.size).sum() >= 2, dict(zip(classes, counts))  # something to compare
        assert (ours == theirs).mean() >= 0.999  # measured 0.99998-0.99999: pixels at near-ties of two logits


def test_center_crop_is_classify_transforms() -> None:
    """The runtime's center_crop takes the pixels Ultralytics' classify_transforms (torchvision's
    Resize of the shorter side + CenterCrop) takes, on real photos of both orientations: what differs
    is resampling only (Pillow's antialiased bilinear against OpenCV's stepwise bilinear), small against
    what the same photo stretched would differ by."""
    from PIL import Image
    from ultralytics.data.augment import classify_transforms

    crop = InputSpec(size=(224, 224), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), resize="center_crop")
    stretch = InputSpec(size=(224, 224), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), resize="stretch")
    theirs = classify_transforms(224)
    for photo in _photos():
        reference = theirs(Image.fromarray(photo)).numpy()[None]
        cropped, stretched = (np.abs(preprocess([photo], spec)[0] - reference).mean() for spec in (crop, stretch))
        assert cropped <= 0.03 and cropped * 3 <= stretched, (photo.shape, cropped, stretched)


@pytest.mark.parametrize(("height", "width"), [(600, 512), (427, 640), (224, 224), (100, 1000), (7, 3)])
def test_center_crop_geometry(height: int, width: int) -> None:
    """torchvision's sizes: the shorter side to 224, the longer int(224 * long / short), the crop offset
    round((n - 224) / 2); the Transform maps the crop's corners back inside the photo."""
    spec = InputSpec(size=(224, 224), resize="center_crop")
    t = plan(height, width, spec)
    short, long = sorted((height, width))
    resized = (224, max(224, int(224 * long / short)))
    nh, nw = (resized if height <= width else resized[::-1])
    assert (round(t.scale_y * height), round(t.scale_x * width)) == (nh, nw)
    assert (-t.pad_y, -t.pad_x) == (int(round((nh - 224) / 2.0)), int(round((nw - 224) / 2.0)))
    corners = t.to_original(np.array([[0, 0, 224, 224]], dtype=np.float32))[0]
    assert corners[0] >= 0 and corners[1] >= 0 and corners[2] <= width and corners[3] <= height
    assert min(corners[2] - corners[0], corners[3] - corners[1]) == pytest.approx(short, abs=1e-3)
    batch, _ = preprocess([np.zeros((height, width, 3), dtype=np.uint8)], spec)
    assert batch.shape == (1, 3, 224, 224)


def test_center_crop_is_for_classifiers_only() -> None:
    data = {"name": "x", "task": "detection", "model": {"source": "ssdlite320_mobilenet_v3_large", "num_classes": 3},
            "input": {"size": [320, 320], "resize": "center_crop"}, "targets": [{"backend": "onnxruntime"}]}
    with pytest.raises(RecipeError, match="input.resize: center_crop is for task classification"):
        parse_recipe(data)


def test_training_is_refused_for_heads_edgevision_cannot_train(tmp_path: Path) -> None:
    """edgevision's training loop serves Ultralytics classifiers (their logits in train mode); the other heads
    need Ultralytics' own losses: a clear error naming its trainer, before any training step."""
    from edgevision.train.loop import train

    for config, task in (("yolov8n.yaml", "detection"), ("yolo26n-sem.yaml", "segmentation")):
        labels = LABELS if task == "detection" else ["background", *LABELS]
        recipe = parse_recipe({"name": "t", "model": {"source": f"ultralytics:{config}", "labels": labels,
                                                      "checkpoint": str(tmp_path / "t.pt")},
                               "input": {"size": 64}, "data": {"train": {"source": "shapes", "count": 4}},
                               "train": {"epochs": 1, "batch": 2}, "targets": [{"backend": "onnxruntime"}]})
        with pytest.raises(RecipeError, match=f"train: edgevision trains Ultralytics classifiers only; train this {task}"):
            train(recipe, log=lambda _line: None)
        assert not (tmp_path / "t.pt").exists()
